"""The Hugging Face Hub side of the zoo: download a checkpoint (``hf_hub_download``), publish one
(``HfApi.upload_folder`` + a tag), or commit it into a git repository in Hub layout (mirrors such as
olah serve those).

Downloads honour ``HF_ENDPOINT`` as it is when the call is made and ``HF_HUB_OFFLINE`` as
huggingface_hub does (read when it is imported); a revision pinned by commit sha loads from the cache
with no network call. Only ``config.json`` and the weights file it
names (a safetensors file) are fetched to load: nothing downloaded is ever unpickled. Publishing is
repeatable: unchanged files make no new commit, and a tag already on the commit stays.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmzoo.checkpoint import CONFIG_NAME, CheckpointError
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.files import regular_files

HUB_PREFIX = "hf-hub:"
#: the Hub's rule for a repo id: ORG/NAME, each letters, digits, '.', '_', '-', neither starting
#: nor ending with '.' or '-', no '--' or '..', a name of at most 96 characters
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^(?!.*(?:--|\.\.)){_REPO_PART}/{_REPO_PART}$")
#: a tag lmzoo creates: letters, digits, '.', '_', '-' (a git ref name of one component, no '..')
TAG = re.compile(r"^(?!.*\.\.)[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")
#: files of a checkpoint directory that are not published (temporary or local-only)
UNPUBLISHED = (".git", ".cache")


class HubError(LmzooError):
    """A Hub repository, revision or file could not be reached or is not an lmzoo checkpoint."""


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/REPO[@REV]`` -> (repo id, revision or None)."""
    body = name.removeprefix(HUB_PREFIX)
    repo_id, _, revision = body.partition("@")
    if not REPO_ID.match(repo_id):
        raise InvalidArgumentError(
            f"{name!r} is not a Hub repository; write hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION"
        )
    return repo_id, revision or None


def _where(repo_id: str, revision: str | None, endpoint: str | None) -> str:
    """A Hub repository at a revision, as messages name it."""
    return f"{repo_id}@{revision or 'main'}" + (f" on {endpoint}" if endpoint else "")


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` as it is now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def _offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE``, read when huggingface_hub is imported)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def download_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory holding ``config.json`` and the weights file it names
    (``model.safetensors``, or a DDPM pipeline's UNet weights) of a Hub repo."""
    from huggingface_hub import hf_hub_download

    from lmzoo.checkpoint import read_config, weights_name
    from lmzoo.version import __version__

    endpoint = _endpoint()
    where = _where(repo_id, revision, endpoint)

    def fetch(filename: str) -> Path:
        with _download_errors(where, filename):
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    endpoint=endpoint,
                    local_files_only=_offline(),
                    library_name="lmzoo",
                    library_version=__version__,
                )
            )

    snapshot = fetch(CONFIG_NAME).parent
    weights = weights_name(read_config(snapshot))  # validated: one of the names a checkpoint may use
    if fetch(weights).parent != (snapshot / weights).parent:  # both from one snapshot (one commit)
        raise HubError(f"{where}: {CONFIG_NAME} and {weights} resolved to different revisions")
    return snapshot


#: what describes a published checkpoint without its weights: config, card, records, plots, tables
RECORD_PATTERNS = ("*.json", "*.md", "*.yaml", "*.png", "tables/*.json")


def download_records(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory of a Hub checkpoint's records (:data:`RECORD_PATTERNS`: its
    config, card, recipe, solve and evaluation records), without the weights."""
    from huggingface_hub import snapshot_download

    from lmzoo.version import __version__

    endpoint = _endpoint()
    where = _where(repo_id, revision, endpoint)
    with _download_errors(where, "records"):
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(RECORD_PATTERNS),
                endpoint=endpoint,
                local_files_only=_offline(),
                library_name="lmzoo",
                library_version=__version__,
            )
        )
    if not (snapshot / CONFIG_NAME).is_file():
        raise HubError(f"{where} has no {CONFIG_NAME}; it is not an lmzoo checkpoint")
    return snapshot


@contextlib.contextmanager
def _download_errors(where: str, filename: str) -> Iterator[None]:
    """Every failure of a Hub download as one HubError naming the repo, revision and fix."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except RevisionNotFoundError:
        raise HubError(f"{where}: no such revision; check the tag, branch or commit sha") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{where}: the repository or its {filename} was not found (private repos need "
            "`hf auth login` or HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:  # not in the cache, and the Hub was not asked or not reachable
        if _offline():
            raise HubError(
                f"{where}: {filename} is not in the local Hub cache and HF_HUB_OFFLINE is set; "
                "unset it to download, or pin a revision that was downloaded before"
            ) from None
        raise HubError(
            f"{where}: the Hub could not be reached and {filename} is not in the local cache; check the "
            "network or HF_ENDPOINT"
        ) from None
    except EntryNotFoundError:
        raise HubError(f"{where} has no {filename}; it is not an lmzoo checkpoint") from None
    except HFValidationError as err:
        raise HubError(f"{where}: {err}") from None
    except (HfHubHTTPError, OSError) as err:
        raise HubError(
            f"{where}: the Hub could not be reached ({type(err).__name__}: {str(err)[:200]}); check the "
            "network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the local cache"
        ) from None


def download_card(repo_id: str, revision: str) -> Path | None:
    """The model card (README.md) of a Hub checkpoint at ``revision``, or None when it has none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        path = hf_hub_download(repo_id, "README.md", revision=revision, endpoint=_endpoint())
    except (EntryNotFoundError, HfHubHTTPError, OSError):
        return None
    return Path(path)


def _published_files(directory: Path) -> list[Path]:
    """The checkpoint's files to publish: regular files only (a link out of the checkpoint is an
    error, never followed), local-only folders left out."""
    return regular_files(directory, error=CheckpointError, skip=UNPUBLISHED)


def _check_publishable(directory: Path) -> None:
    from lmzoo.checkpoint import read_config, weights_name

    weights = weights_name(read_config(directory))
    if not (directory / weights).is_file():
        raise CheckpointError(f"{directory} has no {weights}; build the entry before publishing it")
    _published_files(directory)  # links out of the checkpoint or special files: refused before any upload


@dataclass(frozen=True)
class Published:
    """What a publish did: the commit now holding the checkpoint, its tag, and whether that commit
    is new (a re-publish of unchanged files makes none)."""

    sha: str
    tag: str
    new_commit: bool


class TagTakenError(HubError):
    """The tag asked for already names another commit."""


def _check_tag(tag: str | None) -> None:
    if tag is not None and not TAG.match(tag):
        raise InvalidArgumentError(f"--tag must be letters, digits, '.', '_' and '-' (no '..'), got {tag!r}")


def default_tag() -> str:
    """The tag a publish gets when none is asked for. When it already names another commit (a
    re-publish after a rebuild) the tag is versioned per commit: ``lmzoo-<version>-<sha[:10]>``."""
    from lmzoo.version import __version__

    return f"lmzoo-{__version__}"


def _tag_for(requested: str | None, existing: dict[str, str], sha: str, move: bool) -> tuple[str, bool]:
    """(tag, whether it must be created) for commit ``sha``; ``existing``: tag -> commit."""
    tag = requested or default_tag()
    at = existing.get(tag)
    if at is None or move:
        return tag, at != sha
    if at == sha:
        return tag, False  # a re-publish: the tag is already there
    if requested is None:
        versioned = f"{tag}-{sha[:10]}"
        return versioned, existing.get(versioned) != sha
    raise TagTakenError(
        f"the tag {tag} already names commit {at[:12]}; pass --move-tag to move it, or another --tag"
    )


def _failure(err: BaseException) -> str:
    """One line for what went wrong talking to the Hub (never a token: messages carry none)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set; unset it to publish"
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = "; log in with `hf auth login` or set HF_TOKEN" if status in (401, 403) else ""
        return f"HTTP {status}{hint}"
    reason = f"{type(err).__name__}: {str(err)[:160]}"
    return f"the Hub could not be reached ({reason}); check the network or HF_ENDPOINT"


def publish_to_hub(
    directory: str | os.PathLike[str],
    repo_id: str,
    *,
    tag: str | None = None,
    move_tag: bool = False,
    private: bool = False,
    token: str | None = None,
) -> Published:
    """Upload a checkpoint directory as one commit (``upload_folder``; unchanged files make no new
    commit) and tag it (:func:`default_tag` when ``tag`` is None). Repeatable: publishing the same
    files again changes nothing. Every failure is one HubError saying what was and was not uploaded.
    The token comes from ``token``, ``HF_TOKEN`` or the Hub login; it is never printed."""
    from huggingface_hub import HfApi

    from lmzoo.checkpoint import read_config

    directory = Path(directory)
    _check_publishable(directory)
    if not REPO_ID.match(repo_id):
        raise InvalidArgumentError(
            f"--repo-id must be ORG/REPO (letters, digits, '.', '_', '-'; no '..' or '--'), got {repo_id!r}"
        )
    _check_tag(tag)
    endpoint = _endpoint()
    where = f"{directory.name} to {repo_id}" + (f" on {endpoint}" if endpoint else "")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        before = api.repo_info(repo_id).sha
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            commit_message=PUBLISH_MESSAGE.format(name=read_config(directory).get("name", directory.name)),
            ignore_patterns=[f"{p}/**" for p in UNPUBLISHED],
        )
        sha = str(commit.oid)
    except Exception as err:  # every client or network failure: one line, nothing committed
        raise HubError(f"publishing {where} failed, nothing was committed: {_failure(err)}") from None
    try:
        existing = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id).tags}
        chosen, create = _tag_for(tag, existing, sha, move_tag)
        if create:
            if chosen in existing:
                api.delete_tag(repo_id, tag=chosen)
            api.create_tag(repo_id, tag=chosen, revision=sha, tag_message=f"lmzoo {directory.name}")
    except TagTakenError as err:
        raise TagTakenError(f"published {where} as commit {sha}, but not tagged: {err}") from None
    except Exception as err:
        raise HubError(
            f"published {where} as commit {sha}, but tagging it failed: {_failure(err)}; publish again "
            "to tag it (the files are unchanged, so no new commit is made)"
        ) from None
    return Published(sha=sha, tag=chosen, new_commit=sha != before)


def _git(repo: Path, *args: str, check: bool = True) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "lmzoo"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "lmzoo@localhost"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "lmzoo"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "lmzoo@localhost"),
    }
    try:
        done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise HubError("publishing to a git mirror needs the `git` command; install git") from None
    if done.returncode != 0 and check:
        raise HubError(f"git {args[0]} in {repo} failed: {done.stderr.strip()[:300]}")
    return done.stdout.strip()


#: the commit message of a publish; a git mirror lmzoo wrote has it on its head commit
PUBLISH_MESSAGE = "lmzoo: publish {name}"


def publish_to_git(
    directory: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    tag: str | None = None,
    move_tag: bool = False,
) -> Published:
    """Commit a checkpoint directory into the git repository ``repo`` in Hub layout — files at the
    root, weights as plain blobs (no LFS) — and tag it, as :func:`publish_to_hub` does: the commit
    replaces the files of the previous publish, unchanged files make no new commit, and tags follow
    the same rule. ``repo`` is created when it does not exist or is empty; otherwise it must be an
    lmzoo mirror of the same entry (its head commit a publish of it) with no uncommitted work, and
    its path may not climb out with ``..``: nothing else is ever touched."""
    from lmzoo.checkpoint import read_config

    directory = Path(directory)
    if ".." in Path(repo).parts:
        raise InvalidArgumentError(
            f"--to-git {repo}: the path climbs out with '..'; give the mirror's own path"
        )
    repo = Path(repo)
    _check_publishable(directory)
    _check_tag(tag)
    name = str(read_config(directory).get("name", directory.name))
    message = PUBLISH_MESSAGE.format(name=name)
    _check_mirror(repo, message)
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", "main")
    for tracked in _git(repo, "ls-files", "-z").split("\0"):  # the previous publish's files only
        if tracked:
            (repo / tracked).unlink(missing_ok=True)
    for source in _published_files(directory):
        target = repo / source.relative_to(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    _git(repo, "add", "-A")
    has_head = bool(_git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False))
    changed = not has_head or bool(_git(repo, "status", "--porcelain"))
    if changed:
        _git(repo, "commit", "-q", "-m", message)
    sha = _git(repo, "rev-parse", "HEAD")
    existing: dict[str, str] = {}  # tag -> commit (an annotated tag's target, a lightweight tag's object)
    refs = _git(repo, "for-each-ref", "--format=%(refname:short) %(*objectname) %(objectname)", "refs/tags")
    for line in refs.splitlines():
        tag_name, commit, obj = line.split(" ")
        existing[tag_name] = commit or obj
    try:
        chosen, create = _tag_for(tag, existing, sha, move_tag)
    except TagTakenError as err:
        raise TagTakenError(f"committed {directory.name} to {repo} as {sha}, but not tagged: {err}") from None
    if create:
        _git(repo, "tag", "-f", chosen, sha)
    return Published(sha=sha, tag=chosen, new_commit=changed)


def _check_mirror(repo: Path, message: str) -> None:
    """Refuse a ``--to-git`` target that is not empty and not this entry's lmzoo mirror, or that holds
    uncommitted work: publishing would destroy what is there."""
    if not repo.exists() or (repo.is_dir() and not any(repo.iterdir())):
        return
    if not repo.is_dir():
        raise InvalidArgumentError(f"--to-git {repo} is a file, not a directory")
    fix = "give an empty or new directory, or the mirror this entry was published to"
    if not (repo / ".git").exists():
        raise InvalidArgumentError(f"--to-git {repo} is not empty and not a git mirror; {fix}")
    head = _git(repo, "log", "-1", "--format=%s", check=False)
    if head and head != message:
        raise InvalidArgumentError(
            f"--to-git {repo} is a git repository whose last commit is not {message!r}; {fix}"
        )
    if _git(repo, "status", "--porcelain"):
        raise InvalidArgumentError(f"--to-git {repo} has uncommitted changes; commit or remove them first")
