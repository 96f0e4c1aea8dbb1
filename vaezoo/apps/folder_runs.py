"""``vaezoo reconstruct`` on a folder of images of any size, for a variant that takes any image size (autoencoder-kl)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaezoo.apps.outputs import write_npz
from vaezoo.apps.reconstruction import reconstruct
from vaezoo.core.model import VAE
from vaezoo.data.images import read_images_at_own_size
from vaezoo.errors import InputError
from vaezoo.io.atomic import atomic_write
from vaezoo.io.figures import grid_scale, interleave_rows, paired_row_labels, save_image_grid

GRID_ROW = 4  # images per row of the PNG grid (photos are large)


def takes_folder_of_any_size(model: VAE, data: str) -> bool:
    """Whether ``vaezoo reconstruct`` codes ``data`` image by image at each image's own size: the model takes any
    image size and ``data`` is a folder (of images of one size or several)."""
    return model.capabilities.any_image_size and len(model.config.input_shape) == 3 and Path(data).is_dir()


def reconstruct_folder(model: VAE, folder: Path, out: Path, n: int) -> dict[str, Any]:
    """The first ``n`` images of ``folder``, each reconstructed alone at its own size, written to ``out``: a folder
    (one PNG per image, named as the original), a PNG grid (originals above reconstructions, each image centred
    in the largest one's frame) or an .npz (``original_<i>``, ``reconstruction_<i>`` and the file ``names``).
    Returns the mean squared error over all pixels and the mean PSNR in dB (peak 1, as the pixels are in [0, 1])."""
    if out.suffix.lower() not in ("", ".png", ".npz"):
        raise InputError(f"output {str(out)!r}: images of different sizes go to a folder (-o recon/), a .png grid "
                         "or an .npz, not one .npy array")
    files, images = read_images_at_own_size(folder, model.config.input_shape[0], n)
    originals = [torch.from_numpy(image) for image in images]
    recons = [reconstruct(model, image)[0] for image in originals]
    errors = [float((r - x).pow(2).mean()) for r, x in zip(recons, originals)]
    if out.suffix == "":
        out.mkdir(parents=True, exist_ok=True)
        for path, recon in zip(files, recons):
            write_png(out / f"{path.stem}.png", recon)
    elif out.suffix.lower() == ".png":
        framed, nrow = frame_all(originals + recons), min(GRID_ROW, len(files))
        grid = interleave_rows(framed[:len(files)], framed[len(files):], nrow)
        grid_scale(len(grid), nrow, *grid.shape[2:])  # a grid too large to draw is refused in one line
        save_image_grid(grid, out, nrow=nrow, title=f"{model.model_name}: {len(files)} images of {folder.name} "
                        "at their own sizes and their reconstructions",
                        row_labels=paired_row_labels(len(files), nrow, "original", "reconstructed"))
    else:
        arrays = {f"original_{i}": x.numpy() for i, x in enumerate(originals)}
        arrays.update({f"reconstruction_{i}": r.numpy() for i, r in enumerate(recons)})
        arrays["names"] = np.array([str(path.relative_to(folder)) for path in files])
        write_npz(out, arrays)
    mse = sum(e * x.numel() for e, x in zip(errors, originals)) / sum(x.numel() for x in originals)
    psnr = sum(10 * math.log10(1 / max(e, 1e-12)) for e in errors) / len(errors)
    return {"out": str(out), "n": len(files), "mse": mse, "psnr": psnr}


def frame_all(images: list[Tensor]) -> Tensor:
    """Images of several sizes as one (N, C, H, W) batch: each centred on a white frame of the largest H and W."""
    height, width = max(x.shape[1] for x in images), max(x.shape[2] for x in images)
    framed = torch.ones(len(images), images[0].shape[0], height, width)
    for frame, x in zip(framed, images):
        top, left = (height - x.shape[1]) // 2, (width - x.shape[2]) // 2
        frame[:, top:top + x.shape[1], left:left + x.shape[2]] = x
    return framed


def write_png(path: Path, image: Tensor) -> None:
    """One (C, H, W) image in [0, 1] as an 8-bit PNG at its own size, written atomically."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
