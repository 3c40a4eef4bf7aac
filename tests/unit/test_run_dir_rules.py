"""The rules of mim/config/history.py (which config changes a resume may make) and
mim/rundir.py (what mim may write where; export targets: test_export_targets.py), without
training."""
from __future__ import annotations

import json

import pytest

from mim.config.compose import load
from mim.config.errors import ConfigError
from mim.config.history import (append_history, as_resumed, check_resume, compare,
                                data_differences, describe, history_lines, history_record)
from mim.config.sweep import own_run_dirs, point_names
from mim.rundir import MARKER, check_run_dir, claim_run_dir, is_mim_run


def tree(**changes) -> dict:
    base = {"seed": 0, "mask": {"name": "random", "ratio": 0.5},
            "train": {"batch_size": 8, "accum_steps": 1, "max_steps": 4, "log_every": 1,
                      "num_workers": 0, "precision": "fp32"},
            "optim": {"lr": 1e-3, "betas": [0.9, 0.95]},
            "run": {"dir": "/a", "resume": "auto"}, "backend": {"name": "torch"},
            "launcher": {"name": "local", "nprocs": 1}, "model": {"depth": 2}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            base[section] = {**base[section], name: value}
        else:
            base[section] = value
    return base


def test_what_changes_the_run_is_refused_and_the_rest_is_not():
    refused, accepted, one_sided = compare(
        tree(), tree(mask__ratio=0.75, seed=1, optim__betas=[0.9, 0.99], train__precision="bf16",
                     train__num_workers=4, train__log_every=5, run__dir="/b",
                     run__resume="force", backend={"name": "deepspeed", "zero_stage": 2},
                     launcher__nprocs=2), 8, 16)
    assert refused == {"mask.ratio": (0.5, 0.75), "optim.betas": ([0.9, 0.95], [0.9, 0.99]),
                       "seed": (0, 1), "train.precision": ("fp32", "bf16")}
    assert accepted == {} and one_sided == []
    assert describe({"mask.ratio": (0.5, 0.75)}) == "mask.ratio: 0.5 -> 0.75"


def test_extending_the_run_is_accepted():
    refused, accepted, _ = compare(tree(), tree(train__max_steps=8), 8, 8)
    assert refused == {} and accepted == {"train.max_steps": (4, 8)}


def test_the_batch_may_change_only_with_the_effective_batch_kept():
    # two processes with half the batch: the same 8 clips per step
    refused, accepted, _ = compare(tree(), tree(train__batch_size=4), 8, 8)
    assert refused == {} and accepted == {"train.batch_size": (8, 4)}
    # another batch per process and another effective batch: another run
    refused, _, _ = compare(tree(), tree(train__batch_size=4), 8, 4)
    assert refused == {"train.batch_size": (8, 4), "effective batch": (8, 4)}
    # the same command on twice the processes (a requeue onto more GPUs): not refused
    refused, _, _ = compare(tree(), tree(), 8, 16)
    assert refused == {}


def test_a_key_only_one_side_has_is_reported_not_refused():
    new = tree(model={"depth": 2, "init": "x"})
    refused, _, one_sided = compare(tree(), tree(model={"depth": 2, "extra": 1}), 8, 8)
    assert refused == {} and one_sided == ["model.extra"]
    assert compare(tree(), new, 8, 8)[2] == []  # model.init never matters


def test_force_goes_on_except_where_the_optimiser_state_decides(tmp_path):
    ckpt = tmp_path / "step_00000002"
    with pytest.raises(ConfigError, match=r"^run.resume: .* another config: mask.ratio: 0.5 -> "
                                          r"0.75; .*run.resume=force"):
        check_resume(tree(), tree(mask__ratio=0.75), "auto", ckpt, 8, 8)
    changed, forced = check_resume(tree(), tree(mask__ratio=0.75, train__max_steps=8), "force",
                                   ckpt, 8, 8)
    assert forced and changed == {"train.max_steps": (4, 8), "mask.ratio": (0.5, 0.75)}
    assert check_resume(tree(), tree(train__max_steps=8), "force", ckpt, 8, 8)[1] is False
    # the lr comes back with the optimiser's state: force would only make config.yaml lie
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.005: a resume restores"):
        check_resume(tree(), tree(optim__lr=5e-3), "force", ckpt, 8, 8)


def test_history_appends_one_line_per_start(tmp_path):
    append_history(tmp_path, tree(), history_record("start", 0))
    record = history_record("resume-force", 2, {"mask.ratio": (0.5, 0.75)},
                            {"model.init": ("a.pth", "b.pth")})
    append_history(tmp_path, tree(mask__ratio=0.75), record)
    lines = [json.loads(x) for x in (tmp_path / "config_history.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["start", "resume-force"]
    assert lines[1]["changed"] == {"mask.ratio": [0.5, 0.75]} and lines[1]["step"] == 2
    assert lines[1]["not_applied"] == {"model.init": ["a.pth", "b.pth"]}
    assert lines[1]["config"]["mask"]["ratio"] == 0.75 and "not_applied" not in lines[0]
    text = history_lines([history_record("start", 0), record])
    assert text[0].endswith("step 0: start") and text[1].endswith(
        'step 2: resume-force (mask.ratio: 0.5 -> 0.75; not applied: model.init "b.pth", the '
        'checkpoint\'s "a.pth")')


def test_a_resume_keeps_the_init_the_run_started_from(tmp_path):
    saved = tree(model={"depth": 2, "init": "a.pth"})
    given = tree(model={"depth": 2, "init": "b.pth"}, train__num_workers=4, train__max_steps=8)
    config, ignored = as_resumed(saved, given)
    assert config["model"]["init"] == "a.pth" and given["model"]["init"] == "b.pth"
    assert ignored == {"model.init": ("a.pth", "b.pth")}
    changed, forced = check_resume(saved, config, "auto", tmp_path / "step_00000004", 8, 8)
    assert changed == {"train.max_steps": (4, 8)} and not forced  # the init is not_applied


def test_a_resume_on_other_data_is_refused_unless_forced(tmp_path):
    ckpt = tmp_path / "step_00000004"
    shards = [["shard-000000.tar", 10240], ["shard-000001.tar", 10240]]
    saved = {"image": {"items": 20, "shards": shards}}
    now = {"image": {"items": 30, "shards": [*shards, ["shard-000002.tar", 10240]]}}
    assert data_differences(saved, saved) == {}
    assert data_differences({"image": {"items": 20}}, now) == {
        "data identity.image.items": (20, 30)}  # keys one side lacks are not compared
    with pytest.raises(ConfigError, match=r"another config: data identity.image.items: 20 -> "
                                          r"30, data identity.image.shards: \"2 entries\" -> "
                                          r"\"3 entries, \[\['shard-000002.tar', 10240\]\] new"):
        check_resume(tree(), tree(), "auto", ckpt, 8, 8, saved, now)
    changed, forced = check_resume(tree(), tree(), "force", ckpt, 8, 8, saved, now)
    assert forced and changed["data identity.image.items"] == (20, 30)
    assert check_resume(tree(), tree(), "auto", ckpt, 8, 8, None, now) == ({}, False)


def test_the_refusal_comes_without_a_line_saying_the_resume_goes_on(tmp_path, caplog):
    with caplog.at_level("INFO", logger="mim"), pytest.raises(ConfigError):
        check_resume(tree(), tree(mask__ratio=0.75, train__max_steps=8), "auto",
                     tmp_path / "step_00000002", 8, 8)
    assert "goes on with" not in caplog.text


def test_run_dirs_free_ours_and_foreign(tmp_path):
    check_run_dir(tmp_path / "new")  # missing: free
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty")
    claim_run_dir(tmp_path / "ours")
    assert (tmp_path / "ours" / MARKER).is_file() and is_mim_run(tmp_path / "ours")
    (tmp_path / "ours" / "config.yaml").write_text("x: 1\n")
    check_run_dir(tmp_path / "ours")
    old = tmp_path / "old" / "checkpoints" / "step_00000002"  # a run from before the marker
    old.mkdir(parents=True)
    with pytest.raises(ConfigError, match="neither empty nor a mim run"):  # mim publishes
        check_run_dir(tmp_path / "old")  # only complete checkpoints: an empty one is not its
    (old / "state.pt").write_bytes(b"weights")
    check_run_dir(tmp_path / "old")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"run.dir: .*foreign is neither empty nor a mim run "
                                          r"\(it holds metrics.jsonl"):
        check_run_dir(tmp_path / "foreign")


def test_sweep_points_sharing_a_run_dir_get_their_own(tmp_path):
    points = [["modality=image", "mask.ratio=0.5", f"run.dir={tmp_path}"],
              ["modality=image", "mask.ratio=0.75", f"run.dir={tmp_path}"]]
    assert point_names(points) == ["mask.ratio=0.5", "mask.ratio=0.75"]
    assert point_names([["data.root=/a/b"], ["data.root=/c"]]) == ["data.root=_a_b",
                                                                   "data.root=_c"]

    specs = own_run_dirs(points, [load(p) for p in points], load)
    assert [s.run.dir for s in specs] == [str(tmp_path / "mask.ratio=0.5"),
                                          str(tmp_path / "mask.ratio=0.75")]
    assert specs[1].raw.run.dir == str(tmp_path / "mask.ratio=0.75")  # what config.yaml says
    apart = [["modality=image", f"run.dir={tmp_path / n}"] for n in "ab"]  # a run.dir each
    assert [s.run.dir for s in own_run_dirs(apart, [load(p) for p in apart], load)] == [
        str(tmp_path / "a"), str(tmp_path / "b")]
