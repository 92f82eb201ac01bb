"""What `ansible-inventory --list` costs with the plugin scaler.tfstate.tfstate, against the script.

For states of 20 and 1,000 droplets (version 4, as bench/inventory.py makes them) it prints the
median wall time of real `ansible-inventory --list` with: the script (inventory/scaler-inventory),
the plugin reading the state, and the plugin served from a jsonfile cache. Ansible's own start
dominates at 20 droplets; the figures say how much the plugin adds or saves on top of it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inventory import ROOT, median_seconds, state_v4  # bench/inventory.py

TOOL = Path(sys.executable).parent / "ansible-inventory"
SIZES = (20, 1_000)
RUNS = 7


def main() -> int:
    """Print one line per state size and way of reading it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            HOME=tmp,
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collection"),
            ANSIBLE_DEPRECATION_WARNINGS="False",
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        print(f"ansible-inventory: {TOOL} (median of {RUNS} runs each)")
        print(f"{'droplets':>9}  {'script':>10}  {'plugin':>10}  {'plugin, cached':>15}")
        for size in SIZES:
            state = folder / f"v4-{size}.tfstate"
            state.write_text(json.dumps(state_v4(size)))
            plain = folder / f"plain-{size}.yml"
            plain.write_text(f"plugin: scaler.tfstate.tfstate\nstate: {state}\n")
            cached = folder / f"cached-{size}.yml"
            cached.write_text(
                f"plugin: scaler.tfstate.tfstate\nstate: {state}\ncache: true\n"
                f"cache_plugin: ansible.builtin.jsonfile\ncache_connection: {folder}/cache\n"
            )
            script_env = {**env, "TF_STATE": str(state)}
            figures = []
            for source, run_env in (
                (f"{ROOT}/inventory/", script_env),
                (str(plain), env),
                (str(cached), env),
            ):
                argv = [str(TOOL), "-i", source, "--list"]
                median_seconds(argv, run_env, 1)  # warm: bytecode, and the cache entry
                figures.append(median_seconds(argv, run_env, RUNS))
            print(
                f"{size:>9}  {figures[0] * 1000:7.0f} ms  {figures[1] * 1000:7.0f} ms  "
                f"{figures[2] * 1000:12.0f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
