"""A run directory describes its weights, and mim overwrites nothing it did not write.

One 2-step run (mask ratio 0.5) is trained once for the module; each test that resumes it works
on its own copy. The refusals are checked file by file: names, sizes and contents unchanged.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

BASE = ["train.max_steps=2", "train.ckpt_every=2", "train.vis_every=2", "mask.ratio=0.5"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes (links by their target)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = f"-> {path.readlink()}".encode()
        elif path.is_file():
            out[key] = path.read_bytes()
    return out


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]


def config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.fixture(scope="module")
def base_run(module_cli, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    run.mkdir()  # an empty folder made by the user is free to use
    module_cli.train(run, *BASE)
    return run


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy, symlinks=True)
    return copy


def test_a_fresh_run_is_marked_and_starts_its_history(base_run) -> None:
    assert (base_run / "mim-run.json").is_file()
    records = history(base_run)
    assert [r["event"] for r in records] == ["start"]
    assert records[0]["config"]["mask"]["ratio"] == 0.5 == config(base_run)["mask"]["ratio"]


def test_a_resume_with_another_mask_ratio_stops_with_the_difference(module_cli, run_copy) -> None:
    before = snapshot(run_copy)
    result = module_cli.train(run_copy, *BASE, "mask.ratio=0.75", "train.max_steps=3",
                              check=False)
    assert result.returncode == 2, module_cli.describe(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mim: config error: run.resume:"), result.stderr
    assert "mask.ratio: 0.5 -> 0.75" in last and "run.resume=force" in last, last
    assert "train.max_steps" not in last  # an extension is no difference of the run
    after = snapshot(run_copy)
    after.pop("train.log")  # the refused start's log lines are the one thing added
    assert {k: v for k, v in before.items() if k != "train.log"} == after


def test_force_goes_on_and_the_history_shows_both(module_cli, run_copy) -> None:
    module_cli.train(run_copy, *BASE, "mask.ratio=0.75", "train.max_steps=3", "run.resume=force")
    records = history(run_copy)
    assert [r["event"] for r in records] == ["start", "resume-force"]
    assert [r["config"]["mask"]["ratio"] for r in records] == [0.5, 0.75]
    assert records[1]["step"] == 2
    assert records[1]["changed"]["mask.ratio"] == [0.5, 0.75]
    assert records[1]["changed"]["train.max_steps"] == [2, 3]
    assert config(run_copy)["mask"]["ratio"] == 0.75  # what the weights go on with
    assert "run.resume=force: going on from" in (run_copy / "train.log").read_text()
    assert [r["step"] for r in module_cli.metrics(run_copy)] == [1, 2, 3]


def test_extending_max_steps_is_a_continuation(module_cli, run_copy) -> None:
    result = module_cli.train(run_copy, *BASE, "train.max_steps=3", "train.log_every=2")
    assert "resumed from" in result.stderr, module_cli.describe(result)
    records = history(run_copy)
    assert [r["event"] for r in records] == ["start", "resume"]
    assert records[1]["changed"] == {"train.max_steps": [2, 3]}  # log_every is not the run's
    assert config(run_copy)["train"]["max_steps"] == 3


def test_a_sweep_with_a_fixed_run_dir_gives_each_point_its_own(module_cli, tmp_path) -> None:
    root = tmp_path / "sweep"
    result = module_cli.run("train", "-m", "modality=image", *module_cli.fast,
                            "train.max_steps=1", "mask.ratio=0.5,0.75", f"run.dir={root}")
    assert result.returncode == 0, module_cli.describe(result)
    assert sorted(p.name for p in root.iterdir()) == ["mask.ratio=0.5", "mask.ratio=0.75"]
    for ratio in (0.5, 0.75):
        point = root / f"mask.ratio={ratio}"
        assert config(point)["mask"]["ratio"] == ratio
        assert config(point)["run"]["dir"] == str(point)
        assert [r["event"] for r in history(point)] == ["start"]
        assert (point / "checkpoints" / "step_00000001").is_dir()


def test_a_foreign_folder_is_refused_untouched(module_cli, tmp_path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("my: own\n")
    (foreign / "metrics.jsonl").write_text('{"step": 1}\n')
    before = snapshot(foreign)
    result = module_cli.train(foreign, "train.max_steps=1", check=False)
    assert result.returncode == 2, module_cli.describe(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run.dir:" in lines[0] and "neither empty nor a mim run" \
        in lines[0], result.stderr
    assert snapshot(foreign) == before


def test_an_unwritable_fresh_run_dir_does_not_claim_a_checkpoint(module_cli, tmp_path) -> None:
    (tmp_path / "a_file").write_text("")
    run = tmp_path / "a_file" / "run"  # under a file: the run directory cannot be made
    result = module_cli.train(run, "train.max_steps=1", check=False)
    assert result.returncode == 1, module_cli.describe(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mim: error: Not a directory: ") and "no checkpoint was written: " \
        "fix the cause, then run the same command to start" in last, result.stderr
    assert "intact" not in result.stderr


def _convert(cli, source: Path, output: Path, *extra: str):
    return cli.run("convert", f"input={source}", f"output={output}", "to=hf", *extra)


def test_convert_refuses_a_non_empty_output_and_overwrite_replaces_only_its_own(
        module_cli, base_run, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}\n')
    (out / "notes.txt").write_text("keep me\n")
    before = snapshot(out)
    for extra in ((), ("overwrite=true",)):  # not even overwrite=true replaces the user's files
        result = _convert(module_cli, base_run, out, *extra)
        assert result.returncode == 2, module_cli.describe(result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "output:" in lines[0] and "overwrite=true" in lines[0], lines
        assert snapshot(out) == before
    assert "config.json, notes.txt, which no mim-export.json of mim's lists" in lines[0], lines

    ours = tmp_path / "ours"  # an export mim wrote is replaced
    assert _convert(module_cli, base_run, ours).returncode == 0
    result = _convert(module_cli, base_run, ours, "overwrite=true")
    assert result.returncode == 0, module_cli.describe(result)
    assert json.loads((ours / "config.json").read_text())["model_type"] == "vit_mae"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "out"]  # no temporary left


def test_convert_never_writes_into_a_run_directory(module_cli, base_run) -> None:
    before = snapshot(base_run)
    for output in (base_run, base_run / "hf"):
        result = _convert(module_cli, base_run, output, "overwrite=true")
        assert result.returncode == 2, module_cli.describe(result)
        assert "inside the mim run" in result.stderr.strip().splitlines()[-1], result.stderr
    assert snapshot(base_run) == before


def test_never_sets_the_earlier_run_aside_and_starts_over(module_cli, run_copy) -> None:
    """run.resume=never in a run directory: the earlier run's checkpoints, metrics, trackers and
    history move to previous/<time>/, so the new run's steps are neither rotated away by the
    older, higher ones nor read in their place, and the next start resumes the new run."""
    old = snapshot(run_copy)
    result = module_cli.train(run_copy, "train.max_steps=1", "train.ckpt_every=1",
                              "train.keep_last=1", "mask.ratio=0.75", "run.resume=never")
    [moved] = (run_copy / "previous").iterdir()
    assert f"run.resume=never: the earlier run in {run_copy}" in result.stderr and str(moved) \
        in result.stderr, module_cli.describe(result)
    kept = {k: v for k, v in old.items() if k.split("/")[0] not in ("mim-run.json", "tb")}
    assert {k: v for k, v in snapshot(moved).items() if k.split("/")[0] != "tb"} == kept
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["last",
                                                                            "step_00000001"]
    assert [r["event"] for r in history(run_copy)] == ["start"]
    assert config(run_copy)["mask"]["ratio"] == 0.75
    assert [r["step"] for r in module_cli.metrics(run_copy)] == [1]
    assert "run.resume=never" in (run_copy / "train.log").read_text()  # the new run's log
    again = module_cli.train(run_copy, "train.max_steps=2", "train.ckpt_every=1",
                             "train.keep_last=1", "mask.ratio=0.75")
    assert f"resumed from {run_copy / 'checkpoints' / 'step_00000001'}" in again.stderr


def _pictures(folder: Path, count: int, start: int = 0) -> None:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for n in range(start, start + count):
        Image.new("RGB", (40, 40), (n * 9 % 256, 80, 160)).save(folder / f"{n:03d}.png")


def test_a_resume_on_other_data_is_refused_unless_forced(module_cli, tmp_path) -> None:
    """The checkpoint records the data (its item count here): more files in the folder change
    the data order, so a resume is refused like a config change; run.resume=force goes on.
    The warnings of building the data, logged before the run folder exists, reach train.log."""
    data, run = tmp_path / "photos", tmp_path / "run"
    _pictures(data, 16)
    (data / "zz-link.png").symlink_to(data / "000.png")  # a link to a file listed: warned
    module_cli.train(run, f"data.root={data}", "train.max_steps=2", "train.ckpt_every=2")
    log = (run / "train.log").read_text()
    assert "link to a file already listed" in log and log.index("link to a file") < \
        log.index("run directory:")
    _pictures(data, 8, start=16)
    refused = module_cli.train(run, f"data.root={data}", "train.max_steps=3", check=False)
    assert refused.returncode == 2, module_cli.describe(refused)
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("mim: config error: run.resume: ") and \
        "data identity.image.items: 16 -> 24" in last and "run.resume=force" in last, last
    module_cli.train(run, f"data.root={data}", "train.max_steps=3", "run.resume=force")
    assert history(run)[-1]["changed"]["data identity.image.items"] == [16, 24]


def test_an_empty_checkpoint_folder_is_no_run_and_nothing_is_written(module_cli, tmp_path):
    folder = tmp_path / "half"
    (folder / "checkpoints" / "step_00000001").mkdir(parents=True)
    before = snapshot(folder)
    result = module_cli.train(folder, "train.max_steps=1", check=False)
    assert result.returncode == 2, module_cli.describe(result)
    assert "neither empty nor a mim run" in result.stderr.strip().splitlines()[-1]
    assert snapshot(folder) == before and not (folder / "mim-run.json").exists()


def test_a_failed_model_init_leaves_no_run_folder(module_cli, tmp_path) -> None:
    run = tmp_path / "new"
    result = module_cli.train(run, f"model.init={tmp_path / 'missing.pth'}", check=False)
    assert result.returncode == 2, module_cli.describe(result)
    assert result.stderr.strip().splitlines()[-1].startswith("mim: config error: model.init: ")
    assert not run.exists()


def test_a_resume_records_the_init_the_run_started_from(module_cli, base_run, tmp_path,
                                                        load_state) -> None:
    """A resume takes the checkpoint's weights: config.yaml and every later checkpoint name the
    init the run started from; the history records the other one given, not applied."""
    run = tmp_path / "run"
    module_cli.train(run, f"model.init={base_run}", "train.max_steps=1", "train.ckpt_every=1")
    other = tmp_path / "other.pth"
    module_cli.train(run, f"model.init={other}", "train.max_steps=2", "train.ckpt_every=1")
    assert config(run)["model"]["init"] == str(base_run)
    last = history(run)[-1]
    assert last["event"] == "resume" and last["config"]["model"]["init"] == str(base_run)
    assert last["not_applied"] == {"model.init": [str(base_run), str(other)]}
    client = load_state(run / "checkpoints" / "step_00000002")["client"]
    assert client["config"]["model"]["init"] == str(base_run)
    assert [r["event"] for r in client["history"]] == ["start", "resume"]
    assert client["data"] == {"image": {"items": 26}}  # the built-in photos
