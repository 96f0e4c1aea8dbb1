"""A loopback stand-in for the Hugging Face Hub, for tests. Standard library only.

It answers the requests that the real, unmodified ``huggingface_hub`` client (written against 2.4)
sends for ``HfApi.create_repo``, ``HfApi.create_branch``, ``HfApi.upload_folder`` and
``hf_hub_download``, so that a push and a pull can be tested end to end without the network:

    with hub_server() as (url, store):
        os.environ["HF_ENDPOINT"] = url        # vaezoo.io.hub reads it at call time
        push_to_hub(folder, "org/name", token=TOKEN)
        assert store.files("org/name")["config.json"] == (folder / "config.json").read_bytes()

What it implements (everything else is answered 404 and recorded in ``store.unhandled``):

- ``POST /api/repos/create``: a repo with a ``main`` branch holding ``.gitattributes`` (as the Hub does).
- ``POST /api/models/{repo}/branch/{branch}``: a branch from ``main`` (or ``startingPoint``); 409 if it exists.
- ``POST /api/validate-yaml``: always valid (``upload_folder`` checks a README.md card with it).
- ``POST /api/models/{repo}/preupload/{rev}``: ``uploadMode: "regular"`` for every file, with the git oid
  of the file already there, so the client sends contents inline (base64) in the commit and never
  takes the LFS or Xet path (with ``hf_xet`` installed, 2.4 would upload "lfs" files through Xet).
- ``POST /api/models/{repo}/commit/{rev}``: the NDJSON commit (``header``, ``file``, ``deletedFile``).
- ``GET /api/models/{repo}[/revision/{rev}]``: repo info (the client asks for it when a push changes nothing).
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, a quoted git-sha1 ``ETag`` and
  ``Content-Length``, as the Hub serves a regular (non-LFS) file; errors carry the ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) the client turns into its exceptions.

Writes need ``Authorization: Bearer <a token in store.tokens>``; so do reads of a private repo. As on
the Hub, a request without a valid token gets 401 ``RepoNotFound`` for a private repo, so a test can
tell that the token really travels. Revisions are branch names or 40-hex commit shas.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

TOKEN = "hf_vaezoo_test_write_token"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """The oid git (and the Hub's ETag for a regular file) gives ``content``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> head commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: content}

    def commit(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        digest = hashlib.sha1((parent or "").encode() + message.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        sha = digest.hexdigest()
        self.commits[sha] = dict(files)
        return sha

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch name or a sha names, or None."""
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


@dataclass
class HubStore:
    """What the server holds; tests read it to check what was pushed."""

    repos: dict[str, Repo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=lambda: {TOKEN})
    requests: list[str] = field(default_factory=list)  # "METHOD /path" in order, for debugging
    unhandled: list[str] = field(default_factory=list)  # requests the server does not implement
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]  # type: ignore[index]


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer has a Content-Length
    server: _HubServer

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: object) -> None:  # silence the default stderr log
        pass

    @property
    def store(self) -> HubStore:
        return self.server.store

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        extra = {"X-Error-Message": message, **(headers or {})}
        if code is not None:
            extra["X-Error-Code"] = code
        self._json(status, {"error": message}, extra)

    def _authorised(self) -> bool:
        value = self.headers.get("Authorization", "")
        return value.startswith("Bearer ") and value[len("Bearer "):] in self.store.tokens

    def _repo_for_read(self, repo_id: str) -> Repo | None:
        """The repo, or None after answering as the Hub does for a missing or hidden one."""
        repo = self.store.repos.get(repo_id)
        if repo is not None and (not repo.private or self._authorised()):
            return repo
        # The Hub answers 401 to an anonymous caller and 404 to an authenticated one, in both cases.
        status = 404 if self._authorised() else 401
        self._error(status, "Repository not found", "RepoNotFound")
        return None

    def _repo_for_write(self, repo_id: str) -> Repo | None:
        if not self._authorised():
            message = "Invalid credentials in Authorization header" if "Authorization" in self.headers else \
                "Invalid username or password."
            self._error(401, message)
            return None
        repo = self.store.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        self.store.requests.append(f"{self.command} {path}")
        parts = [unquote(part) for part in path.strip("/").split("/")]
        with self.store.lock:
            handled = self._route(parts)
        if not handled:
            self.store.unhandled.append(f"{self.command} {path}")
            self._error(404, f"not implemented by the test hub: {self.command} {path}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # ------------------------------------------------------------------ routes

    def _route(self, parts: list[str]) -> bool:
        method = self.command
        if method == "POST" and parts == ["api", "repos", "create"]:
            self._create_repo()
        elif len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                self._create_branch(repo_id, rest[1])
            elif method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                self._preupload(repo_id, rest[1])
            elif method == "POST" and len(rest) == 2 and rest[0] == "commit":
                self._commit(repo_id, rest[1])
            elif method == "GET" and (rest == [] or (len(rest) == 2 and rest[0] == "revision")):
                self._repo_info(repo_id, rest[1] if rest else "main")
            else:
                return False
        elif method == "POST" and parts == ["api", "validate-yaml"]:
            self._body()
            self._json(200, {"errors": [], "warnings": []})
        elif method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        else:
            return False
        return True

    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorised():
            self._error(401, "Invalid username or password.")
            return
        if payload.get("type", "model") != "model":
            self._error(400, "the test hub only holds model repos")
            return
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.base_url}/{repo_id}"
        if repo_id in self.store.repos:
            # The Hub's 409 body carries the url too: create_repo(exist_ok=True) returns it.
            message = "You already created this model repo"
            self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            return
        repo = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.branches["main"] = repo.commit(None, {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.store.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _create_branch(self, repo_id: str, branch: str) -> None:
        payload = json.loads(self._body() or b"{}")
        repo = self._repo_for_write(repo_id)
        if repo is None:
            return
        if branch in repo.branches:
            self._error(409, f"Reference refs/heads/{branch} already exists")
            return
        start = repo.resolve(payload.get("startingPoint", "main"))
        if start is None:
            self._error(404, f"Invalid rev id: {payload.get('startingPoint')}", "RevisionNotFound")
            return
        repo.branches[branch] = start
        self._json(200, {})

    def _revision_or_404(self, repo, revision: str) -> str | None:
        """The commit ``revision`` names in ``repo``, or None after answering 404 RevisionNotFound."""
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _repo_at_revision(self, repo_id: str, revision: str, write: bool):
        """``(repo, sha)`` for a request, or None once the error (401/404) has been answered."""
        repo = self._repo_for_write(repo_id) if write else self._repo_for_read(repo_id)
        if repo is None:
            return None
        sha = self._revision_or_404(repo, revision)
        return None if sha is None else (repo, sha)

    def _preupload(self, repo_id: str, revision: str) -> None:
        payload = json.loads(self._body() or b"{}")
        found = self._repo_at_revision(repo_id, revision, write=True)
        if found is None:
            return
        repo, head = found
        current = repo.commits[head]
        files = [
            {
                "path": item["path"],
                "uploadMode": "regular",  # contents come inline in the commit: no LFS, no Xet
                "shouldIgnore": False,
                "oid": git_blob_sha1(current[item["path"]]) if item["path"] in current else None,
            }
            for item in payload.get("files", [])
        ]
        self._json(200, {"files": files, "commitOid": head})

    def _commit(self, repo_id: str, revision: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        repo = self._repo_for_write(repo_id)
        if repo is None:
            return
        if revision not in repo.branches:  # commits go to a branch, never to a bare sha
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return
        head = repo.branches[revision]
        files = dict(repo.commits[head])
        message = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                message = value.get("summary", "")
                if value.get("parentCommit") not in (None, head):
                    self._error(412, "A commit has happened since the parent commit; pull and retry")
                    return
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:  # lfsFile: never asked for, since every preupload answer says "regular"
                self._error(400, f"the test hub does not accept {key!r} commit lines")
                return
        sha = repo.commit(head, files, message)
        repo.branches[revision] = sha
        self._json(200, {"commitUrl": f"{self.base_url}/{repo_id}/commit/{sha}", "commitOid": sha,
                         "success": True, "pullRequestUrl": None})

    def _repo_info(self, repo_id: str, revision: str) -> None:
        found = self._repo_at_revision(repo_id, revision, write=False)
        if found is None:
            return
        repo, sha = found
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                         "siblings": [{"rfilename": path} for path in sorted(repo.commits[sha])]})

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        found = self._repo_at_revision(repo_id, revision, write=False)
        if found is None:
            return
        repo, sha = found
        files = repo.commits[sha]
        if path not in files:
            self._error(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
            return
        content = files[path]
        self._send(200, content, content_type="application/octet-stream", headers={
            "X-Repo-Commit": sha,
            "ETag": f'"{git_blob_sha1(content)}"',
            "Accept-Ranges": "none",
        })


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: HubStore) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.store = store


@contextmanager
def hub_server(store: HubStore | None = None) -> Iterator[tuple[str, HubStore]]:
    """Serve ``store`` on 127.0.0.1 at a free port in a background thread; yield ``(base_url, store)``."""
    store = store if store is not None else HubStore()
    server = _HubServer(store)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-hub", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def use_loopback_hub(monkeypatch, url: str, cache: str) -> Any:
    """Point huggingface_hub (and so vaezoo) at the loopback Hub ``url``, online, with the empty cache ``cache`` and no
    token from the environment; return an ``HfApi`` that writes to it with :data:`TOKEN`."""
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for variable in ("HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    return HfApi(endpoint=url, token=TOKEN)
