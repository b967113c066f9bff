"""Where things are, for tests in any folder: the repository, and where screenshots go."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"  # screenshots and pages a person looks at (git-ignored)
