"""scripts/install.py, the README's install: pip on the pins, without an index that does not answer."""
import http.server
import importlib.util
import socket
import threading

import pytest

from ragtutor import REPOSITORY_DIR

_spec = importlib.util.spec_from_file_location("install", REPOSITORY_DIR / "scripts" / "install.py")
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def test_the_pins_name_pytorchs_cpu_index_once_site_included():
    assert install.extra_indexes(REPOSITORY_DIR / "requirements.txt") == [CPU_INDEX]
    assert install.extra_indexes(REPOSITORY_DIR / "requirements-site.txt") == [CPU_INDEX]


def test_a_reachable_index_leaves_the_command_as_the_readme_says(tmp_path):
    command = install.pip_command(REPOSITORY_DIR / "requirements.txt", tmp_path, probe=lambda url: True)
    assert command[-4:] == ["-r", str(REPOSITORY_DIR / "requirements.txt"), "-e", str(REPOSITORY_DIR)]
    assert command[1:4] == ["-m", "pip", "install"]


def test_an_unreachable_index_is_left_out_with_every_pin_kept(tmp_path, capsys):
    asked = []
    command = install.pip_command(REPOSITORY_DIR / "requirements-site.txt", tmp_path,
                                  probe=lambda url: asked.append(url) or False, options=["--quiet"])
    assert asked == [CPU_INDEX]
    assert "does not answer" in capsys.readouterr().out
    assert command[3:5] == ["install", "--quiet"]
    site_copy = tmp_path / "requirements-site.txt"
    assert command[command.index("-r") + 1] == str(site_copy)
    base_copy = tmp_path / "requirements.txt"
    assert f"-r {base_copy}" in site_copy.read_text(encoding="utf-8")
    assert CPU_INDEX not in base_copy.read_text(encoding="utf-8")

    def pins(path):
        return [line for line in path.read_text(encoding="utf-8").splitlines()
                if "==" in line.split("#")[0]]

    assert pins(base_copy) == pins(REPOSITORY_DIR / "requirements.txt")
    assert pins(site_copy) == pins(REPOSITORY_DIR / "requirements-site.txt")


def test_any_http_answer_counts_as_reachable_and_a_closed_port_does_not():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert install.reachable(f"http://127.0.0.1:{server.server_port}/whl/cpu")
    finally:
        server.shutdown()
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not install.reachable(f"http://127.0.0.1:{port}/whl/cpu", timeout=5)


@pytest.mark.parametrize("url", ["not a url", "ftp://"])
def test_a_malformed_index_is_unreachable(url):
    assert not install.reachable(url, timeout=1)
