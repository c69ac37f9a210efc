"""A small, real Hub-protocol server for tests: the part of the Hugging Face Hub HTTP API that `huggingface_hub`
and `transformers` use to create repos, push commits (regular and LFS uploads), branch, tag and download.

It keeps repositories in memory as git-like commits (40-hex ids, blob oids computed as git does) and answers
errors with the `X-Error-Code` headers the client turns into its own exception types. A commit is applied
all-or-nothing, so a failed upload never changes a repository. Tests can make the next request of a kind fail
(`fail_next`) to prove that.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_BRANCH = "main"
GIT_ATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
REPO = r"(?:(?P<prefix>datasets|spaces)/)?(?P<repo_id>[\w.-]+/[\w.-]+)"


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def blob_oid(self) -> str:
        """What git stores: the file itself, or for an LFS file its pointer."""
        if not self.lfs:
            return git_blob_oid(self.content)
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.content)}\n"
        return git_blob_oid(pointer.encode())

    @property
    def etag(self) -> str:
        """The oid the client compares with the preupload answer: sha256 for LFS files, the git blob oid otherwise."""
        return self.sha256 if self.lfs else self.blob_oid

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "oid": self.blob_oid, "size": len(self.content), "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": 134}
        return entry


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repository:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(oid)

    def state(self) -> dict:
        """Everything a client can observe: refs and the files of every commit (for before/after comparisons)."""
        return {
            "branches": dict(self.branches),
            "tags": dict(self.tags),
            "commits": {oid: {p: f.blob_oid for p, f in c.files.items()} for oid, c in self.commits.items()},
        }


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class Hub:
    """The repositories, the LFS object store and the switches tests turn (upload mode, injected failures)."""

    def __init__(self, upload_mode: str = "lfs"):
        self.upload_mode = upload_mode  # "lfs": binary files go through LFS; "regular": everything inline
        self.repos: dict[tuple[str, str], Repository] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.failures: dict[str, int] = {}
        self.lock = threading.RLock()
        self._commit_counter = count()

    def fail_next(self, kind: str, times: int = 1, status: int = 507) -> None:
        """Make the next `times` requests of `kind` ("lfs-upload" or "commit") fail with `status`, body read."""
        self.failures[kind] = (status, times)

    def take_failure(self, kind: str) -> None:
        status, times = self.failures.pop(kind, (None, 0))
        if times > 1:
            self.failures[kind] = (status, times - 1)
        if status is not None:
            raise HubError(status, f"Injected failure: the storage backend failed during {kind}.")

    def seed(self, repo_id: str, files: dict[str, bytes]) -> Repository:
        """A model repo whose main branch holds `files`: test setup done on the server, with no client."""
        repo = self.create_repo("model", repo_id, private=False)
        head = repo.commits[repo.branches[DEFAULT_BRANCH]]
        stored = {path: StoredFile(content, False) for path, content in files.items()}
        commit = self.new_commit(head, "seed", "", {**head.files, **stored})
        repo.commits[commit.oid] = commit
        repo.branches[DEFAULT_BRANCH] = commit.oid
        return repo

    def has_lfs_object(self, oid: str, size: int) -> bool:
        return oid in self.lfs_objects and len(self.lfs_objects[oid]) == size

    def repo(self, repo_type: str, repo_id: str) -> Repository:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found.", "RepoNotFound")
        return repo

    def commit_at(self, repo: Repository, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def new_commit(self, parent: Commit | None, title: str, message: str, files: dict[str, StoredFile]) -> Commit:
        digest = hashlib.sha1(f"{parent and parent.oid}\n{title}\n{next(self._commit_counter)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].blob_oid}\n".encode())
        date = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return Commit(digest.hexdigest(), parent and parent.oid, title, message, date, files)

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repository:
        repo = Repository(repo_type, repo_id, private)
        initial = self.new_commit(None, "initial commit", "", {".gitattributes": StoredFile(GIT_ATTRIBUTES, False)})
        repo.commits[initial.oid] = initial
        repo.branches[DEFAULT_BRANCH] = initial.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while size := int(handler.rfile.readline().strip().split(b";")[0], 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects: every answer carries Content-Length
    server: "HubServer"

    def log_message(self, format, *args):  # quiet: failures are reported through the client's exceptions
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = read_body(self)
        hub = self.server.hub
        try:
            for route_method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, url.path)
                if route_method == method and match:
                    with hub.lock:
                        hub.requests.append((method, url.path))
                        handler(self, hub, match, parse_qs(url.query), body)
                    return
            raise HubError(404, f"No route for {method} {url.path} in the test Hub server.")
        except HubError as error:
            self.send_error_answer(error)

    def send_error_answer(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        if error.commit:
            headers["X-Repo-Commit"] = error.commit
        self.send_json({"error": error.message}, error.status, headers)

    def send_json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        self.send_bytes(json.dumps(payload).encode(), status, {"Content-Type": "application/json", **(headers or {})})

    def send_bytes(self, content: bytes, status: int = 200, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def base_url(self) -> str:
        return f"http://{self.headers['Host']}"


def repo_of(hub: Hub, match: re.Match) -> Repository:
    groups = match.groupdict()
    repo_type = REPO_TYPES[groups["kind"]] if "kind" in groups else REPO_TYPES.get(groups["prefix"], "model")
    return hub.repo(repo_type, groups["repo_id"])


def revision_of(match: re.Match) -> str:
    return unquote(match.group("rev"))  # revisions arrive quoted (refs%2Fpr%2F1): the path was split first


def api(rest: str) -> str:
    return rf"/api/(?P<kind>models|datasets|spaces)/(?P<repo_id>[\w.-]+/[\w.-]+){rest}"


# --- repositories --------------------------------------------------------------------------------------------------


def create_repo(request, hub, match, query, body):
    payload = json.loads(body)
    repo_type = payload.get("type") or "model"
    repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
    url = f"{request.base_url()}/{URL_PREFIXES[repo_type]}{repo_id}"
    if (repo_type, repo_id) in hub.repos:
        request.send_json({"error": "You already created this repo", "url": url}, 409)
        return
    hub.create_repo(repo_type, repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
    request.send_json({"url": url, "name": repo_id})


def delete_repo(request, hub, match, query, body):
    payload = json.loads(body)
    repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
    hub.repo(payload.get("type") or "model", repo_id)
    del hub.repos[(payload.get("type") or "model", repo_id)]
    request.send_json({})


def repo_info(request, hub, match, query, body):
    repo = repo_of(hub, match)
    revision = revision_of(match) if match.group("rev") else DEFAULT_BRANCH
    commit = hub.commit_at(repo, revision)
    siblings = [{"rfilename": path, **_sibling_details(file)} for path, file in sorted(commit.files.items())]
    request.send_json(
        {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": commit.date,
            "siblings": siblings,
        }
    )


def _sibling_details(file: StoredFile) -> dict:
    details = {"size": len(file.content), "blobId": file.blob_oid}
    if file.lfs:
        details["lfs"] = {"sha256": file.sha256, "size": len(file.content), "pointerSize": 134}
    return details


def whoami(request, hub, match, query, body):
    request.send_json({"type": "user", "name": "test-user", "fullname": "Test User", "orgs": [], "auth": {}})


def validate_yaml(request, hub, match, query, body):
    request.send_json({"errors": [], "warnings": []})


# --- uploads -------------------------------------------------------------------------------------------------------


def preupload(request, hub, match, query, body):
    repo = repo_of(hub, match)
    commit = hub.commit_at(repo, revision_of(match))
    answers = []
    for file in json.loads(body)["files"]:
        binary = b"\0" in base64.b64decode(file["sample"]) or file["path"].endswith(".safetensors")
        lfs = hub.upload_mode == "lfs" and file["size"] > 0 and binary
        current = commit.files.get(file["path"])
        answers.append(
            {
                "path": file["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
                "oid": current.etag if current is not None else None,
            }
        )
    request.send_json({"files": answers})


def lfs_batch(request, hub, match, query, body):
    repo_of(hub, match)
    payload = json.loads(body)
    objects = []
    for item in payload["objects"]:
        answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
        if not hub.has_lfs_object(item["oid"], item["size"]):
            href = f"{request.base_url()}/lfs-objects/{item['oid']}"
            answer["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
        objects.append(answer)
    request.send_json({"transfer": "basic", "objects": objects})


def lfs_upload(request, hub, match, query, body):
    hub.take_failure("lfs-upload")
    oid = match.group("oid")
    if hashlib.sha256(body).hexdigest() != oid:
        raise HubError(400, f"The uploaded content does not hash to {oid}.")
    hub.lfs_objects[oid] = body
    request.send_bytes(b"")


def lfs_verify(request, hub, match, query, body):
    payload = json.loads(body)
    if not hub.has_lfs_object(payload["oid"], payload["size"]):
        raise HubError(404, f"LFS object {payload['oid']} was not uploaded.")
    request.send_json({"message": "ok"})


def commit(request, hub, match, query, body):
    repo = repo_of(hub, match)
    branch = revision_of(match).removeprefix("refs/heads/")
    if query.get("create_pr"):
        raise HubError(501, "Pull requests are not implemented by the test Hub server.")
    if branch not in repo.branches:
        raise HubError(404, f"Invalid rev id: {branch} is not a branch.", "RevisionNotFound")
    hub.take_failure("commit")
    head = repo.commits[repo.branches[branch]]
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    header = next(line["value"] for line in lines if line["key"] == "header")
    if header.get("parentCommit") not in (None, head.oid):
        raise HubError(412, f"The branch {branch} has moved since {header['parentCommit']}.")
    files = apply_operations(hub, dict(head.files), lines)
    new = hub.new_commit(head, header["summary"], header.get("description") or "", files)
    repo.commits[new.oid] = new
    repo.branches[branch] = new.oid
    url = f"{request.base_url()}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{new.oid}"
    request.send_json({"commitUrl": url, "commitOid": new.oid, "pullRequestUrl": None, "success": True})


def apply_operations(hub: Hub, files: dict[str, StoredFile], lines: list[dict]) -> dict[str, StoredFile]:
    """The files after the commit's operations; raises before anything is stored if one of them is invalid."""
    for line in lines:
        key, value = line["key"], line["value"]
        if key == "file":
            files[value["path"]] = StoredFile(base64.b64decode(value["content"]), False)
        elif key == "lfsFile":
            if not hub.has_lfs_object(value["oid"], value["size"]):
                raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded.")
            files[value["path"]] = StoredFile(hub.lfs_objects[value["oid"]], True)
        elif key == "deletedFile":
            if files.pop(value["path"], None) is None:
                raise HubError(404, f"{value['path']} does not exist.", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = value["path"].rstrip("/") + "/"
            files = {path: file for path, file in files.items() if not path.startswith(prefix)}
        elif key != "header":
            raise HubError(400, f"Unknown commit operation {key!r}.")
    return files


# --- refs ----------------------------------------------------------------------------------------------------------


def create_branch(request, hub, match, query, body):
    repo = repo_of(hub, match)
    branch = unquote(match.group("name"))
    if branch in repo.branches:
        raise HubError(409, f"Branch {branch} already exists.")
    payload = json.loads(body or b"{}")
    repo.branches[branch] = hub.commit_at(repo, payload.get("startingPoint") or DEFAULT_BRANCH).oid
    request.send_json({})


def delete_branch(request, hub, match, query, body):
    repo = repo_of(hub, match)
    if repo.branches.pop(unquote(match.group("name")), None) is None:
        raise HubError(404, f"Branch {match.group('name')} not found.", "RevisionNotFound")
    request.send_json({})


def create_tag(request, hub, match, query, body):
    repo = repo_of(hub, match)
    tag = json.loads(body)["tag"]
    if tag in repo.tags:
        raise HubError(409, f"Tag {tag} already exists.")
    repo.tags[tag] = hub.commit_at(repo, revision_of(match)).oid
    request.send_json({})


def list_refs(request, hub, match, query, body):
    repo = repo_of(hub, match)

    def refs(names: dict[str, str], kind: str) -> list[dict]:
        return [{"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid} for name, oid in names.items()]

    request.send_json({"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"), "converts": []})


def list_commits(request, hub, match, query, body):
    repo = repo_of(hub, match)
    commit, history = hub.commit_at(repo, revision_of(match)), []
    while commit is not None:
        history.append(
            {
                "id": commit.oid,
                "title": commit.title,
                "message": commit.message,
                "authors": [{"user": "test-user"}],
                "date": commit.date,
            }
        )
        commit = repo.commits.get(commit.parent) if commit.parent else None
    request.send_json(history)


def list_discussions(request, hub, match, query, body):
    repo_of(hub, match)
    request.send_json({"discussions": [], "count": 0, "start": 0})  # this server has no pull requests


# --- reading files -------------------------------------------------------------------------------------------------


def tree_entries(commit: Commit, folder: str, recursive: bool) -> list[dict]:
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    entries, folders = [], set()
    for path, file in sorted(commit.files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(file.tree_entry(path))
    directories = [{"type": "directory", "oid": git_blob_oid(p.encode()), "size": 0, "path": p} for p in folders]
    return sorted(directories, key=lambda entry: entry["path"]) + entries


def list_tree(request, hub, match, query, body):
    commit = hub.commit_at(repo_of(hub, match), revision_of(match))
    folder = unquote(match.group("path") or "")
    entries = tree_entries(commit, folder, query.get("recursive", ["false"])[0].lower() == "true")
    if folder and not entries:
        raise HubError(404, f"{folder} does not exist at {commit.oid}.", "EntryNotFound", commit.oid)
    request.send_json(entries)


def paths_info(request, hub, match, query, body):
    commit = hub.commit_at(repo_of(hub, match), revision_of(match))
    form = parse_qs(body.decode())
    paths = form.get("paths", []) + form.get("paths[]", [])
    entries = []
    for path in paths:
        if path in commit.files:
            entries.append(commit.files[path].tree_entry(path))
        elif any(name.startswith(path.rstrip("/") + "/") for name in commit.files):
            entries.append({"type": "directory", "oid": git_blob_oid(path.encode()), "size": 0, "path": path})
    request.send_json(entries)


def resolve(request, hub, match, query, body):
    repo = repo_of(hub, match)
    commit = hub.commit_at(repo, revision_of(match))
    path = unquote(match.group("path"))
    file = commit.files.get(path)
    if file is None:
        raise HubError(404, f"{path} does not exist at {commit.oid}.", "EntryNotFound", commit.oid)
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "X-Repo-Commit": commit.oid,
        "ETag": f'"{file.blob_oid}"',
    }
    if file.lfs:
        headers.update({"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(len(file.content))})
    content, status = file.content, 200
    requested = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
    if requested:
        start = int(requested.group(1))
        end = int(requested.group(2)) if requested.group(2) else len(content) - 1
        headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        content, status = content[start : end + 1], 206
    request.send_bytes(content, status, headers)


REV = r"(?P<rev>[^/]+)"
ROUTES = [
    ("POST", r"/api/repos/create", create_repo),
    ("DELETE", r"/api/repos/delete", delete_repo),
    ("GET", r"/api/whoami-v2", whoami),
    ("POST", r"/api/validate-yaml", validate_yaml),
    ("GET", api(rf"(?:/revision/{REV})?"), repo_info),
    ("POST", api(rf"/preupload/{REV}"), preupload),
    ("POST", api(rf"/commit/{REV}"), commit),
    ("POST", api(r"/branch/(?P<name>[^/]+)"), create_branch),
    ("DELETE", api(r"/branch/(?P<name>[^/]+)"), delete_branch),
    ("POST", api(rf"/tag/{REV}"), create_tag),
    ("GET", api(r"/refs"), list_refs),
    ("GET", api(rf"/commits/{REV}"), list_commits),
    ("GET", api(r"/discussions"), list_discussions),
    ("GET", api(rf"/tree/{REV}(?:/(?P<path>.*))?"), list_tree),
    ("POST", api(rf"/paths-info/{REV}"), paths_info),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", lfs_batch),
    ("PUT", r"/lfs-objects/(?P<oid>[0-9a-f]{64})", lfs_upload),
    ("POST", r"/lfs-objects/(?P<oid>[0-9a-f]{64})/verify", lfs_verify),
    ("GET", rf"/{REPO}/resolve/{REV}/(?P<path>.+)", resolve),
    ("HEAD", rf"/{REPO}/resolve/{REV}/(?P<path>.+)", resolve),
]


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: Hub):
        super().__init__(("127.0.0.1", 0), HubRequestHandler)  # port 0: the OS picks a free one
        self.hub = hub

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"
