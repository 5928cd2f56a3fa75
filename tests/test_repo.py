"""The README's promises about the repository itself."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_quickstart_and_test_commands():
    quickstart, tests = readme_commands()[:2]
    assert "pip install -e ." in quickstart and "mlx_hjepa.train configs/quickstart.yaml" in quickstart
    assert (ROOT / "configs" / "quickstart.yaml").is_file()
    assert "pytest" in tests and '".[dev]"' in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert readme_commands()[1] in ci_lines
