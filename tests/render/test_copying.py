"""The private copy of a chart or Kustomize tree: links kept, loops refused, budgets held."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from plugin.errors import RenderError
from plugin.render import copying
from plugin.render.copying import CopyBudgetError, CopyLimits, copy_tree
from plugin.render.process import Deadline


def make_repo(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    chart = repo / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    return repo, chart


def test_links_inside_the_copy_stay_links_pointing_inside_it(tmp_path: Path) -> None:
    repo, chart = make_repo(tmp_path)
    os.symlink("templates/cm.yaml", chart / "alias.yaml")
    (chart / "sub").mkdir()
    os.symlink("../templates", chart / "sub" / "templates")
    copy = tmp_path / "scratch" / "app"
    copy_tree(chart, copy, repo)
    assert os.readlink(copy / "alias.yaml") == "templates/cm.yaml"
    assert os.readlink(copy / "sub" / "templates") == "../templates"
    assert (copy / "sub" / "templates" / "cm.yaml").read_text() == "kind: ConfigMap\n"
    assert os.path.realpath(copy / "sub" / "templates").startswith(str(copy.resolve()))


def test_links_elsewhere_in_the_repository_are_copied_as_content(tmp_path: Path) -> None:
    repo, chart = make_repo(tmp_path)
    (repo / "shared").mkdir()
    (repo / "shared" / "values.yaml").write_text("a: 1\n")
    (repo / "common" / "templates").mkdir(parents=True)
    (repo / "common" / "templates" / "x.yaml").write_text("x\n")
    os.symlink("../shared/values.yaml", chart / "values.yaml")
    (chart / "charts").mkdir()
    os.symlink("../../common", chart / "charts" / "common")
    copy = tmp_path / "copy"
    copy_tree(chart, copy, repo)
    assert not (copy / "values.yaml").is_symlink()
    assert (copy / "values.yaml").read_text() == "a: 1\n"
    assert not (copy / "charts" / "common").is_symlink()
    assert (copy / "charts" / "common" / "templates" / "x.yaml").read_text() == "x\n"


@pytest.mark.parametrize("target", ["/etc", "../../outside", "../missing"])
def test_links_outside_the_repository_or_to_nothing_are_refused(
    tmp_path: Path, target: str
) -> None:
    repo, chart = make_repo(tmp_path)
    (tmp_path / "outside").mkdir()
    os.symlink(target, chart / "templates" / "link")
    with pytest.raises(RenderError, match=r"symlink templates/link (points outside|leads to)"):
        copy_tree(chart, tmp_path / "copy", repo)


def test_two_dotdot_links_are_a_loop_not_an_exponential_copy(tmp_path: Path) -> None:
    """The attack: followed, `a -> ..` and `b -> ..` copy 2^depth trees until paths are too long."""
    repo, chart = make_repo(tmp_path)
    os.symlink("..", chart / "templates" / "a")
    os.symlink("..", chart / "templates" / "b")
    with pytest.raises(CopyBudgetError, match=r"templates/a leads back .* \(a loop\); refused"):
        copy_tree(chart, tmp_path / "copy", repo)
    files = sum(len(names) for _d, _s, names in os.walk(tmp_path / "copy"))
    assert files < 10


def test_a_loop_through_a_materialised_directory_is_refused(tmp_path: Path) -> None:
    repo, chart = make_repo(tmp_path)
    (repo / "common" / "deep").mkdir(parents=True)
    os.symlink("..", repo / "common" / "deep" / "up")
    os.symlink("../../common", chart / "templates" / "common")
    with pytest.raises(CopyBudgetError, match=r"\(a loop\); refused"):
        copy_tree(chart, tmp_path / "copy", repo)


def test_links_that_expand_exponentially_are_refused_by_the_file_budget(tmp_path: Path) -> None:
    """No loop, but 2^20 files once a renderer follows the links."""
    repo, chart = make_repo(tmp_path)
    for level in range(20):
        here = chart / "templates" / f"d{level}"
        here.mkdir()
        os.symlink(f"../d{level + 1}", here / "l1")
        os.symlink(f"../d{level + 1}", here / "l2")
    (chart / "templates" / "d20").mkdir()
    (chart / "templates" / "d20" / "f.yaml").write_text("x\n")
    with pytest.raises(CopyBudgetError, match=r"more than 20000 files \(PLUGIN_MAX_COPY_FILES\)"):
        copy_tree(chart, tmp_path / "copy", repo)


def test_file_and_byte_budgets(tmp_path: Path) -> None:
    repo, chart = make_repo(tmp_path)
    for number in range(30):
        (chart / "templates" / f"f{number}.yaml").write_text("x" * 1000)
    with pytest.raises(CopyBudgetError, match=r"more than 10 files \(PLUGIN_MAX_COPY_FILES\)"):
        copy_tree(chart, tmp_path / "c1", repo, CopyLimits(max_files=10))
    with pytest.raises(CopyBudgetError, match=r"larger than 10 KiB \(PLUGIN_MAX_COPY_SIZE\)"):
        copy_tree(chart, tmp_path / "c2", repo, CopyLimits(max_bytes=10 * 1024))
    copy_tree(chart, tmp_path / "c3", repo, CopyLimits(max_files=40, max_bytes=40 * 1024))


def test_the_copy_stops_at_the_deadline(tmp_path: Path) -> None:
    repo, chart = make_repo(tmp_path)
    for number in range(600):
        (chart / "templates" / f"f{number}.yaml").write_text("x")
    expired = Deadline(at=0.0, seconds=3.0)
    with pytest.raises(CopyBudgetError, match=r"ran out of time: .* 3 s \(PLUGIN_TIMEOUT\)"):
        copy_tree(chart, tmp_path / "copy", repo, CopyLimits(deadline=expired))


def test_fifos_are_not_copied(tmp_path: Path) -> None:
    repo, chart = make_repo(tmp_path)
    os.mkfifo(chart / "templates" / "pipe")
    copy_tree(chart, tmp_path / "copy", repo)
    assert not (tmp_path / "copy" / "templates" / "pipe").exists()


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "read-write"])
def test_copied_files_are_private_and_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sendfile: bool
) -> None:
    """Content byte for byte (also beyond one read), mode 0600 whatever the source's, with
    `sendfile` and where the file system refuses it."""
    if not sendfile:

        def refuse(*args: object) -> int:
            raise OSError(errno.EINVAL, "sendfile refused")

        monkeypatch.setattr(copying.os, "sendfile", refuse)
    repo, chart = make_repo(tmp_path)
    big = bytes(range(256)) * 9000  # 2.3 MB: several reads
    (chart / "templates" / "big.bin").write_bytes(big)
    os.chmod(chart / "templates" / "big.bin", 0o755)
    (chart / "empty").write_bytes(b"")
    copy_tree(chart, tmp_path / "copy", repo)
    copied = tmp_path / "copy" / "templates" / "big.bin"
    assert copied.read_bytes() == big
    assert oct(copied.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "copy" / "empty").read_bytes() == b""
    assert (tmp_path / "copy" / "Chart.yaml").read_text() == (chart / "Chart.yaml").read_text()


def test_a_fifo_in_place_of_a_listed_file_is_refused_without_blocking(tmp_path: Path) -> None:
    """The file was listed as regular and then swapped for a FIFO: no open() that waits for a
    writer, a clear refusal instead."""
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(RenderError, match=r"templates/x\.yaml changed while it was copied"):
        copying._copy_regular_file(
            str(tmp_path / "pipe"), str(tmp_path / "out"), "templates/x.yaml"
        )
    assert not (tmp_path / "out").exists()


def test_a_link_free_tree_is_not_walked_twice_and_a_linked_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a link the copy's own counts are the expansion; with one, the expansion check
    (loops, budgets of the followed tree) still runs."""
    calls: list[Path] = []
    check = copying.check_expansion
    monkeypatch.setattr(
        copying, "check_expansion", lambda tree, limits: (calls.append(tree), check(tree, limits))
    )
    repo, chart = make_repo(tmp_path)
    copy_tree(chart, tmp_path / "c1", repo)
    assert calls == []
    os.symlink("cm.yaml", chart / "templates" / "alias.yaml")
    copy_tree(chart, tmp_path / "c2", repo)
    assert calls == [tmp_path / "c2"]
