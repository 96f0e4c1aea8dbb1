"""Publishing a model folder to the Hugging Face Hub, after checking that it loads back into its variant.

>>> from vaezoo.zoo.publish import push_to_hub
>>> push_to_hub("runs/vae-digits", "my-org/vae-digits")  # doctest: +SKIP
'https://huggingface.co/my-org/vae-digits/commit/3f0c...'
"""
from __future__ import annotations

from pathlib import Path

from vaezoo.errors import CheckpointError
from vaezoo.io.hub import upload_model_dir
from vaezoo.io.model_dir import WEIGHTS_NAME
from vaezoo.zoo.builder import load_model_dir


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Upload the model folder ``folder`` to ``repo_id`` (see vaezoo.io.hub.upload_model_dir); return the commit URL.

    What is published must load back: the folder's weights are loaded strictly into the variant its
    config.json names before anything is uploaded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"cannot push {folder}: it is not a folder; pass a run folder or a save_pretrained one")
    if (folder / WEIGHTS_NAME).is_file():  # without it, upload_model_dir says what is missing or why a pickle is refused
        load_model_dir(folder)
    return upload_model_dir(folder, repo_id, private=private, revision=revision, token=token,
                            commit_message=commit_message)
