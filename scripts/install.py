"""Install the course's tested environment into the running Python: the README's quick start.

    python scripts/install.py            # pip install -r requirements.txt -e .
    python scripts/install.py --site     # ... and the website's tools (requirements-site.txt)
    python scripts/install.py --quiet    # other options go to pip as they are

It runs exactly `pip install -r requirements.txt -e .` when PyTorch's CPU index
(requirements.txt's --extra-index-url) answers. Where that index cannot be reached, pip would
retry it five times for every package (about 765 "Retrying" warnings and some 20 minutes): the
script asks it once, with a 10-second limit, and if it gets no answer it installs the same pins
without that index, saying so. pip then takes torch from the indexes it is configured with. Only
the standard library is used: it runs on a bare Python.
"""
import argparse
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX_OPTION = "--extra-index-url"


def extra_indexes(requirements):
    """The --extra-index-url URLs of a requirements file (and of the files it includes)."""
    urls = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] == INDEX_OPTION:
            urls.append(words[1])
        elif len(words) == 2 and words[0] in ("-r", "--requirement"):
            urls += extra_indexes(requirements.parent / words[1])
    return urls


def reachable(url, timeout=10):
    """Whether `url`'s server answers at all (any HTTP status counts: the server is there)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def without_indexes(requirements, urls, folder):
    """Copies of `requirements` and the files it includes, without the --extra-index-url lines of `urls`."""
    folder = Path(folder)
    lines = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] == INDEX_OPTION and words[1] in urls:
            continue
        if len(words) == 2 and words[0] in ("-r", "--requirement"):
            line = f"-r {without_indexes(requirements.parent / words[1], urls, folder)}"
        lines.append(line)
    copy = folder / requirements.name
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return copy


def pip_command(requirements, skipped_folder, probe=reachable, options=()):
    """The pip command that installs `requirements` and the package; prints what it leaves out."""
    unreachable = [url for url in extra_indexes(requirements) if not probe(url)]
    if unreachable:
        print(f"{', '.join(unreachable)} does not answer: installing the same pins without it. On Linux "
              "pip then takes torch from its other indexes; if none has the CPU build, it downloads "
              "the larger CUDA build of the same version.", flush=True)
        requirements = without_indexes(requirements, unreachable, skipped_folder)
    return [sys.executable, "-m", "pip", "install", *options, "-r", str(requirements), "-e", str(ROOT)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", action="store_true",
                        help="also install the website's tools (requirements-site.txt)")
    args, pip_options = parser.parse_known_args(argv)
    requirements = ROOT / ("requirements-site.txt" if args.site else "requirements.txt")
    with tempfile.TemporaryDirectory() as folder:
        command = pip_command(requirements, folder, options=pip_options)
        return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
