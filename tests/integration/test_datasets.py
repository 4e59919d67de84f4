"""Real data paths: MovieLens-100k from the RecBole wheel, and bring-your-own files via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from training.movielens import load_movielens_100k
from training.synthetic import SyntheticConfig, write_files

ROOT = Path(__file__).resolve().parents[2]


def test_movielens_100k_loads_with_its_real_shape() -> None:
    ds = load_movielens_100k()  # fetches and verifies the wheel once, then reads the cache
    assert (len(ds.users), len(ds.items), len(ds.interactions)) == (943, 1682, 100_000)
    assert set(ds.users.gender_vocab) >= {"F", "M"}
    assert "Film-Noir" in ds.items.genre_vocab
    assert ds.items.year[ds.items.ids.index("1412")] == 0  # RecBole's copy reads 'V' there
    assert ds.interactions.rating.min() == 1.0
    assert ds.interactions.rating.max() == 5.0
    assert ds.sha256 == load_movielens_100k().sha256


def test_cli_builds_from_your_own_files(tmp_path: Path) -> None:
    files = write_files(SyntheticConfig(n_users=300, n_items=150, seed=2), tmp_path, progress=False)
    repo = tmp_path / "repo"
    command = [sys.executable, "-m", "contract.cli", "build", "-q", "--out", str(repo)]
    command += ["--interactions", str(files["interactions"]), "--items", str(files["items"])]
    command += ["--users", str(files["users"]), "--retrieval-epochs", "2", "--ranking-epochs", "1"]
    command += ["--report-dir", str(tmp_path / "reports")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert "Quality on the test split of interactions" in done.stdout
    assert "version 1 of 4 models and the one-call ranking model written" in done.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "contract.cli", "models", "--repo", str(repo), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    rows = json.loads(listing.stdout)
    assert sorted(r["model"] for r in rows) == [
        "combiner",
        "ranker_dcn",
        "ranker_mlp",
        "ranking",
        "user_tower",
    ]
    assert all(r["version"] == 1 and r["served"] for r in rows)
