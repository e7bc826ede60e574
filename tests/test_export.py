"""Exports: images as one PNG grid. (The GIF/MP4/CSV/static-image export tests are in test_app.py for now.)"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from geoflow.export import save_image_grid


def test_save_image_grid_png(tmp_path):
    x = torch.full((5, 1, 8, 8), -1.0)
    x[1] = 1.0
    buf = io.BytesIO()
    save_image_grid(x, buf, nrow=3, scale=2)
    img = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    # 2 rows x 3 columns of 16 px tiles with 1 px padding
    assert img.shape == (2 * 17 + 1, 3 * 17 + 1)
    assert img[1, 1] == 0 and img[1, 18] == 255 and img[0, 0] == 128
    save_image_grid(x, tmp_path / "sub" / "g.png")
    assert (tmp_path / "sub" / "g.png").stat().st_size > 0
