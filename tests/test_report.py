"""What people look at: Table 1 beside the paper, attention figures, the demo grounding score."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from show_attend_tell import figures, grounding, report
from show_attend_tell.encoders import resize_shorter


def write_attention(
    path, *, grid=(2, 2), image_size=64, attention="soft", captions=("a red circle",), files=("img_0.jpg",), alphas=None
):
    n = len(captions)
    steps = max(len(c.split()) for c in captions) + 1
    if alphas is None:
        alphas = np.full((n, steps, grid[0] * grid[1]), 1 / (grid[0] * grid[1]))
    with h5py.File(path, "w") as f:
        f["alphas"] = np.asarray(alphas, dtype=np.float16)
        f["n_words"] = np.array([len(c.split()) for c in captions], dtype=np.int32)
        f["finished"] = np.ones(n, dtype=bool)
        f["image_ids"] = np.arange(n, dtype=np.int64) + 7
        f["image_index"] = np.arange(n, dtype=np.int64)
        f.create_dataset("files", data=list(files), dtype=h5py.string_dtype())
        f.create_dataset("captions", data=list(captions), dtype=h5py.string_dtype())
        f.attrs.update(
            {
                "grid": list(grid),
                "image_size": image_size,
                "encoder": "efficientnet_lite0",
                "layer": "blocks.4",
                "beam_size": 3,
                "attention": attention,
                "split": "test",
            }
        )
    return path


def write_metrics(path, paper_bleu=(0.6, 0.4, 0.3, 0.2), meteor=0.19, bp=0.9, full_stop=(0.63, 0.45, 0.33, 0.22)):
    row = {"split": "test", "images": 1000, "meteor": meteor, "rouge_l": 0.45, "cider": 0.55}
    row |= {f"paper_bleu_{n}": v for n, v in enumerate(paper_bleu, 1)}
    row |= {f"full_stop_bleu_{n}": v for n, v in enumerate(full_stop or (), 1)}
    row |= {f"bleu_{n}": v * bp for n, v in enumerate(paper_bleu, 1)}
    pd.DataFrame([row]).to_csv(path, index=False)
    return path


def write_train_log(path, seconds=((50.0, 10.0), (40.0, 20.0)), precision="bfloat16"):
    """A train_log.csv of epochs with these (train, validation) seconds."""
    pd.DataFrame(
        [
            {"epoch": k + 1, "train_seconds": t, "val_seconds": v, "device": "cpu", "precision": precision}
            for k, (t, v) in enumerate(seconds)
        ]
    ).to_csv(path, index=False)
    return path


def test_table1_puts_our_rows_beside_the_papers_on_its_scale(tmp_path):
    rows = [
        report.row(
            "flickr8k",
            model,
            write_metrics(tmp_path / f"{model}.csv"),
            write_attention(tmp_path / f"{model}.h5", attention=model),
            write_train_log(tmp_path / "log.csv"),
        )
        for model in ("soft", "hard")
    ]
    table = report.table1(rows, tmp_path / "table1.csv", tmp_path / "table1.md")
    soft = table.iloc[0]
    assert soft["bleu_4"] == pytest.approx(20.0) and soft["coco_bleu_4"] == pytest.approx(18.0)
    assert soft["meteor"] == pytest.approx(19.0)
    assert (soft["xu2015_bleu_4"], soft["xu2015_meteor"]) == (19.5, 18.93)
    assert table.iloc[1]["xu2015_bleu_4"] == 21.3
    assert (soft["encoder"], soft["grid"], soft["beam_size"], soft["split"]) == ("efficientnet_lite0", "2x2", 3, "test")
    md = (tmp_path / "table1.md").read_text()
    assert soft["train_minutes"] == pytest.approx(2.0) and (soft["device"], soft["precision"]) == ("cpu", "bfloat16")
    assert (
        "| flickr8k | soft | efficientnet_lite0 blocks.4 (2x2) | 2.0 min, cpu bfloat16 | 3 | test (1000) | 60.0 / 67 |"
        in md
    )
    assert "without the brevity penalty" in md
    assert "| 19.0 / 18.93 | 63.0 / 22.0 | 18.0 |" in md, "BLEU-1 / 4 with a final full stop, beside METEOR"
    assert pd.read_csv(tmp_path / "table1.csv").shape[0] == 2


def test_metrics_from_before_the_full_stop_variant_leave_its_cell_empty(tmp_path):
    rows = [
        report.row(
            "demo",
            "soft",
            write_metrics(tmp_path / "m.csv", full_stop=None),
            write_attention(tmp_path / "a.h5"),
            write_train_log(tmp_path / "log.csv"),
        )
    ]
    table = report.table1(rows, tmp_path / "t.csv", tmp_path / "t.md")
    assert pd.isna(table.iloc[0]["bleu_1_full_stop"])
    assert "| 19.0 |  | 18.0 |" in (tmp_path / "t.md").read_text()


def test_rows_the_paper_does_not_have_show_ours_alone(tmp_path):
    rows = [
        report.row(
            "demo",
            "soft",
            write_metrics(tmp_path / "m.csv"),
            write_attention(tmp_path / "a.h5"),
            write_train_log(tmp_path / "log.csv"),
        )
    ]
    table = report.table1(rows, tmp_path / "t.csv", tmp_path / "t.md")
    assert pd.isna(table.iloc[0]["xu2015_bleu_4"])
    assert "| 60.0 | 40.0 |" in (tmp_path / "t.md").read_text()


def test_cell_centres_map_the_grid_back_through_resize_and_centre_crop():
    centres = grounding.cell_centres((14, 14), image_size=256, crop=224)
    assert resize_shorter(224) == 256
    np.testing.assert_allclose(centres[0], [16 + 8, 16 + 8])  # the crop starts 16 px in; cells are 16 px
    np.testing.assert_allclose(centres[-1], [256 - 16 - 8, 256 - 16 - 8])
    half = grounding.cell_centres((2, 2), image_size=128, crop=224)  # a 128 px demo image
    np.testing.assert_allclose(half[0], [(16 + 56) / 2, (16 + 56) / 2])


def test_pointing_game_counts_peaks_inside_the_named_unique_objects_box():
    centres = grounding.cell_centres((2, 2), image_size=256, crop=224)  # cells centred at 72 and 184
    objects = {
        "a.jpg": [
            {"shape": "circle", "bbox": [150, 150, 220, 220]},
            {"shape": "star", "bbox": [40, 40, 100, 100]},
            {"shape": "star", "bbox": [150, 30, 200, 90]},
        ],
        "b.jpg": [{"shape": "square", "bbox": [40, 150, 100, 220]}],
    }
    peak = lambda cell: np.eye(4)[cell]  # noqa: E731
    captions = {"a.jpg": ["a", "circle", "and", "a", "star"], "b.jpg": ["a", "triangle"]}
    alphas = {
        "a.jpg": np.stack([peak(0), peak(3), peak(0), peak(0), peak(0), peak(0)]),
        "b.jpg": np.stack([peak(0), peak(2), peak(0)]),
    }
    result = grounding.measure(captions, alphas, objects, centres)
    assert result.pointed_words == 1  # the circle; "star" has two objects, "triangle" none
    assert result.pointing == 1.0
    assert result.naming == 0.5  # b.jpg names a triangle that is not there
    alphas["a.jpg"][1] = peak(0)
    assert grounding.measure(captions, alphas, objects, centres).pointing == 0.0


def test_upsampled_attention_peaks_where_the_grid_does():
    alpha = np.zeros(16)
    alpha[5] = 1.0  # row 1, column 1 of a 4x4 grid
    mask = figures.upsample(alpha, (4, 4), 64)
    assert mask.shape == (64, 64) and mask.max() == pytest.approx(1.0)
    y, x = np.unravel_index(mask.argmax(), mask.shape)
    assert 16 <= y < 32 and 16 <= x < 32


def test_split_figures_draw_one_panel_per_word_for_the_first_images(tmp_path):
    paths = []
    for i in range(3):
        Image.fromarray(np.full((80, 80, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"img_{i}.jpg")
        paths.append(tmp_path / f"img_{i}.jpg")
    pd.DataFrame(
        {
            "image_index": range(3),
            "image_id": [7, 8, 9],
            "split": "test",
            "file": [p.name for p in paths],
            "path": [str(p) for p in paths],
        }
    ).to_csv(tmp_path / "images.csv", index=False)
    attention = write_attention(
        tmp_path / "a.h5", captions=("a red circle", "two", "a b c d e f"), files=[p.name for p in paths]
    )
    written = figures.split_figures(attention, tmp_path / "images.csv", tmp_path / "figs", count=2)
    assert [p.name for p in written] == ["7.png", "8.png"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["7.png", "8.png"]
    with Image.open(written[0]) as image:
        assert image.format == "PNG" and image.width > image.height
