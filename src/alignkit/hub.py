"""The Hugging Face hub's snapshots, for models (models/loading.py) and data sets (data/records.py): one
place that turns huggingface_hub's failures into an error naming the id and the way out.
"""

from __future__ import annotations

from pathlib import Path

from alignkit.errors import AlignkitError


def snapshot(repo: str, revision: str, *, repo_type: str, name: str, local: str, error: type[AlignkitError],
             allow_patterns: list[str] | None = None) -> Path:
    """The local snapshot of `repo` at `revision` ('' = the default branch) from huggingface_hub's cache,
    downloading what is missing unless HF_HUB_OFFLINE is set (exactly as from_pretrained resolves an
    id). A failure raises `error` starting with `name` (how the user wrote the id); `local` says what
    local path to give instead when offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    kind = "model" if repo_type == "model" else "data set"
    try:
        return Path(snapshot_download(repo, repo_type=repo_type, revision=revision or None,
                                      allow_patterns=allow_patterns))
    except LocalEntryNotFoundError:
        raise error(f"{name}: the {kind} is not in the local hub cache and the hub cannot be reached (offline, or "
                    f"HF_HUB_OFFLINE=1): give {local} instead, or run once on a connected machine with the same "
                    "HF_HOME to fill the cache") from None
    except RevisionNotFoundError:
        raise error(f"{name}: the {kind} has no revision '{revision}'") from None
    except GatedRepoError:
        raise error(f"{name}: the {kind} is gated: accept its terms on the hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise error(f"{name}: no such {kind} on the hub (or it is private: log in with hf auth login); a local "
                    "path must exist") from None
    except HfHubHTTPError as exc:
        raise error(f"{name}: the hub answered {exc}") from None
