"""Publish a model directory to the Hugging Face Hub and fetch one back: safetensors only, never a pickle.

A model directory (see ``vaezoo.io.model_dir``) is ``config.json`` + ``model.safetensors`` (+ a
``README.md`` card); a run folder written by ``vaezoo train`` is one. Only those three files travel.
This module moves files; ``VAE.push_to_hub`` and ``vaezoo.zoo.publish.push_to_hub`` check first that
what they publish loads back into a model.

>>> from vaezoo.io.hub import download_model_dir, parse_hub_source, upload_model_dir
>>> upload_model_dir("runs/vae-digits", "my-org/vae-digits")  # doctest: +SKIP
'https://huggingface.co/my-org/vae-digits/commit/3f0c...'
>>> repo_id, revision = parse_hub_source("hf-hub:my-org/vae-digits@v1")
>>> folder = download_model_dir(repo_id, revision)  # doctest: +SKIP
>>> model = vaezoo.load_model_dir(folder)  # doctest: +SKIP

Settings come from the environment, read at each call rather than once at import as huggingface_hub
does, so that a process (a notebook, a test) that changes them afterwards is still obeyed:
``HF_ENDPOINT`` (the Hub's URL), ``HF_HUB_OFFLINE=1`` (cache only; pushing is refused),
``HF_HUB_CACHE`` / ``HF_HOME`` (where downloads are cached) and ``HF_TOKEN`` (read by huggingface_hub
itself at call time, after an explicit ``token=`` and before the ``hf auth login`` token). A download
whose Hub accepts no connection within REACH_TIMEOUT_S serves the cache or fails at once, with the offline hint.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    validate_repo_id,
)

from vaezoo._version import __version__
from vaezoo.errors import CheckpointError, HubError
from vaezoo.io.model_dir import CARD_NAME, CONFIG_NAME, PICKLE_SUFFIXES, WEIGHTS_NAME, read_config_json

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
PUBLISHED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)

REACH_TIMEOUT_S = 2.0  # how long a download waits for the Hub to accept a connection before it serves the cache
OFFLINE_HINT = "or work offline: set HF_HUB_OFFLINE=1 and load a local model folder or a registry tag"
_REVISION = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.+/-]{0,199}")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


# ---------------------------------------------------------------------------- sources and settings


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """Split ``hf-hub:ORG/NAME[@REVISION]`` into ``(repo_id, revision)``; revision is None when absent.

    >>> parse_hub_source("hf-hub:my-org/vae-digits@v1")
    ('my-org/vae-digits', 'v1')
    >>> parse_hub_source("hf-hub:my-org/vae-digits")
    ('my-org/vae-digits', None)
    """
    if not isinstance(source, str) or not source.startswith(HUB_PREFIX):
        raise HubError(f"{source!r} is not a Hub source; write {HUB_PREFIX}ORG/NAME or {HUB_PREFIX}ORG/NAME@REVISION")
    repo_id, at, revision = source[len(HUB_PREFIX):].partition("@")
    if at and not revision:
        raise HubError(f"{source!r} has nothing after '@'; write {HUB_PREFIX}{repo_id}@BRANCH (or a tag or commit) "
                       "or drop the '@' for main")
    check_repo_id(repo_id, source=source)
    if at:
        check_revision(revision, source=source)
    return repo_id, revision or None


def check_repo_id(repo_id: str, source: str | None = None) -> str:
    """Return ``repo_id`` if it has the Hub's ``ORG/NAME`` form, else raise a HubError saying why."""
    where = f" (in {source!r})" if source is not None and source != repo_id else ""
    try:
        validate_repo_id(repo_id)  # huggingface_hub's own rule: characters, length, no '--' or '..'
        problem = None
    except HFValidationError as error:
        problem = " ".join(str(error).split())
    # A model is always published under a user or an organisation, so vaezoo asks for the ORG/ part too.
    if problem is None and not (isinstance(repo_id, str) and repo_id.count("/") == 1):
        problem = "it has no ORG/ part"
    if problem is not None:
        hint = "; add the user or organisation: ORG/NAME" if isinstance(repo_id, str) and "/" not in repo_id else ""
        raise HubError(
            f"{repo_id!r}{where} is not a Hub repo id ({problem}): write ORG/NAME using letters, digits, '-', '_' "
            f"and '.' (no '--' or '..', at most 96 each), e.g. my-org/vae-digits{hint}"
        )
    return repo_id


def check_revision(revision: str, source: str | None = None) -> str:
    """Return ``revision`` (a branch, tag or commit sha) if it is a plausible git ref, else raise a HubError."""
    where = f" (in {source!r})" if source is not None else ""
    if (not isinstance(revision, str) or not _REVISION.fullmatch(revision) or ".." in revision or "//" in revision
            or revision.endswith(("/", ".lock"))):
        raise HubError(f"revision {revision!r}{where} is not a branch, tag or commit name; "
                       "use letters, digits and '-', '_', '.', '/', e.g. main or v1")
    return revision


def hub_endpoint() -> str:
    """The Hub's base URL: ``HF_ENDPOINT`` now, else what huggingface_hub read at import (https://huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now or was set at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache_dir(cache_dir: str | Path | None = None) -> str:
    """Where downloads are cached: ``cache_dir``, else ``HF_HUB_CACHE``, else ``HF_HOME``/hub (as huggingface_hub)."""
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return os.path.expanduser(os.path.expandvars(os.environ[variable]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.path.expandvars(os.environ["HF_HOME"])), "hub")
    return constants.HF_HUB_CACHE


# ---------------------------------------------------------------------------- push


def upload_model_dir(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Upload the model directory ``folder`` to the Hub repo ``repo_id``; return the commit's URL.

    The folder must be one vaezoo can load (config.json + model.safetensors that fit each other); only
    config.json, model.safetensors and README.md are uploaded, and a folder holding pickle weights
    (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``) is refused. The repo is created if missing
    (``private`` only applies then) and so is the branch ``revision`` (from main). ``token`` defaults
    to ``HF_TOKEN`` or the ``hf auth login`` token.

    >>> push_to_hub("runs/vae-digits", "my-org/vae-digits", revision="v1")  # doctest: +SKIP
    'https://huggingface.co/my-org/vae-digits/commit/...'
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    if revision is not None:
        check_revision(revision)
    architecture = _check_publishable(folder)
    endpoint = hub_endpoint()
    if hub_offline():
        raise HubError(f"cannot push {folder} to {repo_id} while HF_HUB_OFFLINE=1; unset it")
    api = HfApi(endpoint=endpoint, token=token, library_name="vaezoo", library_version=__version__)
    target = f"{repo_id}@{revision}" if revision else repo_id
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {architecture} with vaezoo {__version__}",
            allow_patterns=list(PUBLISHED_FILES),
        )
    except Exception as error:
        hub_error = _push_error(error, folder=folder, target=target, endpoint=endpoint)
        if hub_error is None:
            raise
        raise hub_error from error
    logger.info("pushed %s to %s (%s)", folder, target, commit.commit_url)
    return str(commit.commit_url)


def _check_publishable(folder: Path) -> str:
    """Refuse a folder that is not a model directory or that holds pickles; return its architecture.

    Whether its weights fit config.json is checked by the caller, which can build the model
    (``VAE.push_to_hub`` and ``vaezoo.zoo.publish.push_to_hub`` load it back strictly first).
    """
    if not folder.is_dir():
        raise CheckpointError(f"cannot push {folder}: it is not a folder; pass a run folder or a save_pretrained one")
    pickles = sorted(path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise HubError(
            f"{folder} holds {', '.join(pickles)}: vaezoo publishes safetensors only, since unpickling a file can "
            f"run arbitrary code; move them out of the folder (only {', '.join(PUBLISHED_FILES)} are uploaded)"
        )
    inside = folder.resolve()
    for name in PUBLISHED_FILES:
        path = folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise HubError(f"{path} is a link to {path.resolve()}, outside {folder}: vaezoo uploads only files inside "
                           "the folder; replace the link with a copy of the file you mean to publish")
    config = read_config_json(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}; write it with save_model_dir or vaezoo train")
    if not (folder / CARD_NAME).is_file():
        logger.warning("%s has no %s model card; the Hub page will be empty", folder, CARD_NAME)
    return str(config["architecture"])


# ---------------------------------------------------------------------------- download


def download_model_dir(repo_id: str, revision: str | None = None, *, token: str | None = None,
                       cache_dir: str | Path | None = None, local_files_only: bool = False,
                       force_download: bool = False, subfolder: str = "", filenames: tuple[str, ...] = ()) -> Path:
    """Fetch config.json, model.safetensors and (if present) README.md of ``repo_id`` into the Hugging Face
    cache; return the snapshot folder holding them, ready for ``vaezoo.load_model_dir``.

    ``revision`` is a branch, tag or commit (default main); all files come from the one commit it
    names when config.json is fetched. With ``HF_HUB_OFFLINE=1`` or ``local_files_only`` the files come from
    the cache only; ``force_download`` fetches them again. Nothing else is ever downloaded, so no pickle can arrive.
    ``filenames`` (another library's, never a pickle) replace those three, read from ``subfolder`` of the repo
    (the folder returned): a pretrained tag's ``hub_files`` and ``hub_subfolder``.

    >>> folder = download_model_dir("my-org/vae-digits", "v1")  # doctest: +SKIP
    >>> vaezoo.load_model_dir(folder)  # doctest: +SKIP
    """
    check_repo_id(repo_id)
    if revision is not None:
        check_revision(revision)
    if any(Path(name).suffix in PICKLE_SUFFIXES for name in filenames):
        raise HubError(f"{repo_id}: refusing to fetch {', '.join(filenames)}: vaezoo never downloads pickle files")
    endpoint, offline, cache = hub_endpoint(), hub_offline() or local_files_only, hub_cache_dir(cache_dir)
    # huggingface_hub retries an unanswered request for about 24 s, logging each retry, before it falls
    # back to the cache; a Hub that does not accept a connection goes to the cache at once instead.
    unreachable = None if offline else hub_unreachable(endpoint)
    if unreachable is not None:
        logger.info("cannot reach the Hub at %s (%s): looking in the cache", endpoint, unreachable)
        offline = True

    def fetch(filename: str, at: str | None, optional: bool = False) -> Path | None:
        try:
            return Path(hf_hub_download(
                repo_id, filename, subfolder=subfolder or None, revision=at, token=token, cache_dir=cache, endpoint=endpoint,
                local_files_only=offline, force_download=force_download and not offline, library_name="vaezoo",
                library_version=__version__,
            ))
        except Exception as error:
            # An optional file may be missing from the repo (404 EntryNotFound) or, offline, from the cache;
            # online, a LocalEntryNotFoundError means the Hub could not be asked, which is a real failure.
            missing = isinstance(error, EntryNotFoundError)
            if optional and missing and (offline or not isinstance(error, LocalEntryNotFoundError)):
                logger.debug("%s has no %s", repo_id, filename)
                return None
            hub_error = _download_error(error, repo_id, revision, "/".join(filter(None, (subfolder, filename))), cache,
                                        endpoint, offline, unreachable)
            if hub_error is None:
                raise
            raise hub_error from error

    first, *others = filenames or (CONFIG_NAME, WEIGHTS_NAME)
    folder = fetch(first, revision).parent  # type: ignore[union-attr]
    snapshot = folder.parents[len(Path(subfolder).parts) - 1] if subfolder else folder
    # Pin the other files to the commit the first came from, so a branch moving meanwhile cannot mix commits.
    pinned = snapshot.name if _COMMIT_SHA.fullmatch(snapshot.name) else revision
    for name in others:
        fetch(name, pinned)
    if not filenames:
        fetch(CARD_NAME, pinned, optional=True)
    logger.info("%s%s is in %s", repo_id, f"@{revision}" if revision else "", folder)
    return folder


# ---------------------------------------------------------------------------- errors


def hub_unreachable(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why no connection to ``endpoint`` (or to the proxy the environment names for it) opens within
    ``timeout`` seconds: a refused connection, a host that does not resolve, no answer; None when one opens.

    The connection is tried in a thread, since resolving a host name does not honour socket timeouts.
    """
    parts = urllib.parse.urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(_detail(error))

    thread = threading.Thread(target=connect, name="vaezoo-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of whichever HTTP client this huggingface_hub uses (httpx2, httpx or requests)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                               ("requests", ("ConnectionError", "Timeout"))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [getattr(module, name) for name in names if isinstance(getattr(module, name, None), type)]
    return tuple(found)


def _detail(error: BaseException) -> str:
    """One line saying what the server or the transport said."""
    if isinstance(error, HfHubHTTPError):
        status = getattr(error.response, "status_code", "?")
        message = error.server_message or str(error).strip().splitlines()[0]
        return " ".join(f"HTTP {status}: {message}".split())
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _status(error: BaseException) -> int | None:
    return getattr(getattr(error, "response", None), "status_code", None)


def _push_error(error: Exception, *, folder: Path, target: str, endpoint: str) -> HubError | None:
    """The HubError for a failed push, or None for an error that is a bug (re-raised as it is)."""
    status = _status(error)
    if isinstance(error, OfflineModeIsEnabled):
        return HubError(f"cannot push {folder} to {target} while HF_HUB_OFFLINE=1; unset it")
    if isinstance(error, _network_errors()):
        return HubError(f"cannot reach the Hub at {endpoint}: {_detail(error)}; check the network or HF_ENDPOINT")
    if isinstance(error, RepositoryNotFoundError) or status in (401, 403):
        return HubError(f"not authorised to write {target} on {endpoint} ({_detail(error)}): pass --token or run "
                        "`hf auth login` with a token that can write to that user or organisation")
    if isinstance(error, RevisionNotFoundError):
        return HubError(f"{target}: the branch does not exist on {endpoint} and could not be created "
                        f"({_detail(error)}); create it on the Hub or push to main")
    if isinstance(error, HfHubHTTPError):
        if status is not None and status >= 500:
            return HubError(f"the Hub at {endpoint} failed while pushing to {target} ({_detail(error)}); "
                            "try again later")
        return HubError(f"the Hub at {endpoint} refused the push of {folder} to {target} ({_detail(error)}); "
                        "check the repo id and HF_ENDPOINT")
    if isinstance(error, ValueError) and CARD_NAME in str(error):
        return HubError(f"{folder / CARD_NAME} was refused by the Hub: {_detail(error)}; fix its YAML header")
    return None


def _download_error(error: BaseException, repo_id: str, revision: str | None, filename: str, cache: str,
                    endpoint: str, offline: bool, unreachable: str | None = None) -> HubError | None:
    """The HubError for a failed download, or None for an error that is a bug (re-raised as it is).

    ``unreachable`` says why the Hub could not be reached, when the cache was searched for that reason.
    """
    target = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and unreachable is not None:
        return HubError(f"cannot reach the Hub at {endpoint} ({unreachable}) and {target} is not in the local cache "
                        f"({cache}); check the network or HF_ENDPOINT, {OFFLINE_HINT}")
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and offline:
        return HubError(f"{target} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1; "
                        "run once online or unset HF_HUB_OFFLINE")
    if isinstance(error, LocalEntryNotFoundError):  # online, but the Hub could not be asked and the cache lacks it
        cause = error.__cause__ if error.__cause__ is not None else error
        return HubError(f"cannot reach the Hub at {endpoint} ({_detail(cause)}) and {target} is not in the local "
                        f"cache ({cache}); check the network or HF_ENDPOINT, {OFFLINE_HINT}")
    if isinstance(error, GatedRepoError):
        return HubError(f"{repo_id} on {endpoint} is gated: accept its conditions on the model page, then pass "
                        "--token or run `hf auth login`")
    if isinstance(error, RepositoryNotFoundError):
        return HubError(f"{repo_id} was not found on {endpoint}: check the repo id; if it is private, pass --token "
                        "or run `hf auth login` with a token that can read it")
    if isinstance(error, RevisionNotFoundError):
        return HubError(f"{repo_id} has no revision {revision!r} on {endpoint}: check the branch, tag or commit "
                        "name, or leave it out for main")
    if isinstance(error, EntryNotFoundError):
        return HubError(f"{target} on {endpoint} has no {filename}, so it is not a vaezoo model repo "
                        f"(one holds {CONFIG_NAME} and {WEIGHTS_NAME}); check the repo id and revision")
    if isinstance(error, _network_errors()):
        return HubError(f"cannot reach the Hub at {endpoint}: {_detail(error)}; check the network or HF_ENDPOINT")
    if isinstance(error, HfHubHTTPError):
        status = _status(error)
        if status in (401, 403):
            return HubError(f"not authorised to read {target} on {endpoint} ({_detail(error)}): pass --token or run "
                            "`hf auth login`")
        later = "; try again later" if status is not None and status >= 500 else "; check the repo id and HF_ENDPOINT"
        return HubError(f"downloading {filename} of {target} from {endpoint} failed ({_detail(error)}){later}")
    if isinstance(error, OSError):  # e.g. a download cut short (size check) or a full disk
        return HubError(f"downloading {filename} of {target} into {cache} failed: {_detail(error)}; "
                        "check the disk and retry")
    return None
