"""The Hugging Face Hub side of the zoo: download a checkpoint (``hf_hub_download``), publish one
(``HfApi.upload_folder`` + a tag), or commit it into a git repository in Hub layout (mirrors such as
olah serve those).

Downloads honour ``HF_ENDPOINT`` as it is when the call is made and ``HF_HUB_OFFLINE`` as
huggingface_hub does (read when it is imported); a revision pinned by commit sha loads from the cache
with no network call. Only ``config.json`` and
``model.safetensors`` are fetched to load: nothing downloaded is ever unpickled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from lmzoo.checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError
from lmzoo.errors import InvalidArgumentError, LmzooError

HUB_PREFIX = "hf-hub:"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
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


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` as it is now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def _offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE``, read when huggingface_hub is imported)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def download_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory holding ``config.json`` and ``model.safetensors`` of a Hub repo."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from lmzoo.version import __version__

    endpoint = _endpoint()
    where = f"{repo_id}@{revision or 'main'}" + (f" on {endpoint}" if endpoint else "")
    paths = []
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(
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
    directories = {Path(p).parent for p in paths}
    if len(directories) != 1:  # both files come from one snapshot (one commit)
        raise HubError(f"{where}: config.json and model.safetensors resolved to different revisions")
    snapshot = directories.pop()
    return snapshot


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
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and not any(part in UNPUBLISHED for part in p.parts)
    )


def _check_publishable(directory: Path) -> None:
    from lmzoo.checkpoint import read_config

    if not (directory / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}; build the entry before publishing it")
    read_config(directory)


def publish_to_hub(
    directory: str | os.PathLike[str],
    repo_id: str,
    *,
    tag: str | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Upload a checkpoint directory as one commit (``upload_folder``), tag it, return the commit sha.
    The token comes from ``token``, ``HF_TOKEN`` or the Hub login; it is never printed."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    directory = Path(directory)
    _check_publishable(directory)
    if not REPO_ID.match(repo_id):
        raise InvalidArgumentError(f"--repo-id must be ORG/REPO, got {repo_id!r}")
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            commit_message=f"lmzoo: publish {directory.name}",
            ignore_patterns=[f"{p}/**" for p in UNPUBLISHED],
        )
        sha = commit.oid
        if tag:
            api.create_tag(repo_id, tag=tag, revision=sha, tag_message=f"lmzoo {directory.name}")
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = " (log in with `hf auth login` or set HF_TOKEN)" if status in (401, 403) else ""
        raise HubError(f"publishing {directory.name} to {repo_id} failed: HTTP {status}{hint}") from None
    return str(sha)


def _git(repo: Path, *args: str) -> str:
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
    if done.returncode != 0:
        raise HubError(f"git {args[0]} in {repo} failed: {done.stderr.strip()[:300]}")
    return done.stdout.strip()


def publish_to_git(
    directory: str | os.PathLike[str], repo: str | os.PathLike[str], *, tag: str | None = None
) -> str:
    """Commit a checkpoint directory into the git repository ``repo`` (created if needed) in Hub
    layout — files at the root, weights as plain blobs (no LFS) — tag it, return the commit sha.
    The commit replaces the repository's files with the checkpoint's."""
    directory, repo = Path(directory), Path(repo)
    _check_publishable(directory)
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", "main")
    for old in repo.iterdir():
        if old.name != ".git":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for source in _published_files(directory):
        target = repo / source.relative_to(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", f"lmzoo: publish {directory.name}")
    sha = _git(repo, "rev-parse", "HEAD")
    if tag:
        _git(repo, "tag", "-f", tag, sha)
    return sha
