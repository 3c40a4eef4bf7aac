"""fp16's dynamic loss scale (``mim/engine/scaler.py``) in the plain-PyTorch step, on the CPU:
an overflowing step is skipped, counted and halves the scale, clean steps grow it again, and
its state goes through a checkpoint file unchanged."""
from __future__ import annotations

import torch
from torch import nn

from mim.engine.backends.torch import TorchBackend
from mim.engine.checkpoint import load_weights_only
from mim.engine.scaler import LossScaling

CPU = torch.device("cpu")


def _backend(seed: int = 0) -> tuple[TorchBackend, nn.Linear]:
    torch.manual_seed(seed)
    backend = TorchBackend(precision="fp16")
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    backend.setup(model, optimizer, scheduler)
    return backend, model


def _train_step(backend: TorchBackend, model: nn.Linear, overflow: bool = False) -> None:
    with backend.autocast():
        out = model(torch.ones(3, 4))
    assert out.dtype == torch.float16  # autocast to fp16 runs on the CPU too
    loss = out.float().square().mean()
    backend.backward(loss)
    if overflow:  # what an fp16 overflow leaves in the gradients
        model.weight.grad[0, 0] = float("inf")
    backend.step()


def test_an_overflowing_step_is_skipped_counted_and_lowers_the_scale():
    backend, model = _backend()
    assert backend.precision == "fp16" and backend.grad_norm() is None
    _train_step(backend, model)
    assert backend.precision_metrics() == {"loss_scale": 2.0**16, "overflow_steps": 0}
    before = model.weight.detach().clone()
    _train_step(backend, model, overflow=True)
    assert torch.equal(model.weight, before), "the overflowing step changed the weights"
    assert backend.precision_metrics() == {"loss_scale": 2.0**15, "overflow_steps": 1}
    assert model.weight.grad is None  # its gradients were dropped all the same
    _train_step(backend, model)
    assert not torch.equal(model.weight, before)
    assert backend.micro_step == 3  # the data position counts the skipped step


def test_the_scale_grows_back_after_clean_steps():
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaling = LossScaling(CPU, init_scale=8.0, growth_interval=2)
    scales = []
    for overflow in (True, False, False, False, True):
        scaling.scale(model(torch.ones(1, 4)).sum()).backward()
        if overflow:
            model.bias.grad.fill_(float("nan"))
        scaling.step(optimizer, model.parameters(), clip_grad=1.0)
        optimizer.zero_grad(set_to_none=True)
        scales.append(scaling.metrics()["loss_scale"])
    assert scales == [4.0, 4.0, 8.0, 8.0, 4.0]
    assert scaling.metrics()["overflow_steps"] == 2


def test_the_scaler_state_goes_through_a_checkpoint_file(tmp_path):
    backend, model = _backend()
    _train_step(backend, model, overflow=True)
    _train_step(backend, model)
    backend.save(tmp_path, {"step": 2})
    state = load_weights_only(tmp_path / "state.pt")  # plain values: weights_only reads it
    assert state["scaler"]["scale"] == 2.0**15 and state["scaler"]["overflow_steps"] == 1
    assert state["scaler"]["_growth_tracker"] == 1

    resumed, resumed_model = _backend(seed=1)
    assert resumed.load(tmp_path) == {"step": 2}
    assert resumed.precision_metrics() == backend.precision_metrics()
    for run, net in ((backend, model), (resumed, resumed_model)):
        _train_step(run, net)
    assert torch.equal(model.weight, resumed_model.weight)
    assert resumed.scaling.state_dict() == backend.scaling.state_dict()


def test_other_precisions_have_no_scaler_and_report_nothing():
    for precision in ("fp32", "bf16"):
        backend = TorchBackend(precision=precision)
        assert backend.scaling is None and backend.precision_metrics() == {}
