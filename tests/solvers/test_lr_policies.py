"""Learning-rate policies against float64 transcriptions of Caffe's GetLearningRate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import ConfigError, UnknownTypeError
from pipeline.proto import caffe_pb2
from pipeline.registry import LR_POLICIES
from pipeline.solvers import lr_policies


def solver(**fields) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter(base_lr=0.01)
    stepvalue = fields.pop("stepvalue", [])
    for k, v in fields.items():
        setattr(p, k, v)
    p.stepvalue.extend(stepvalue)
    return p


def f(x) -> float:
    """A proto float field as Caffe holds it (float32), widened to float64."""
    return float(np.float32(x))


# float64 references, written from sgd_solver.cpp's header comment
REFERENCES = {
    "fixed": lambda p, it: f(p.base_lr),
    "step": lambda p, it: f(p.base_lr) * f(p.gamma) ** (it // p.stepsize),
    "exp": lambda p, it: f(p.base_lr) * f(p.gamma) ** it,
    "inv": lambda p, it: f(p.base_lr) * (1 + f(p.gamma) * it) ** (-f(p.power)),
    "poly": lambda p, it: f(p.base_lr) * (1 - it / p.max_iter) ** f(p.power),
    "sigmoid": lambda p, it: f(p.base_lr) / (1 + math.exp(-f(p.gamma) * (it - p.stepsize))),
}

PARAMS = {
    "fixed": dict(lr_policy="fixed"),
    "step": dict(lr_policy="step", gamma=0.1, stepsize=30),
    "exp": dict(lr_policy="exp", gamma=0.99),
    "inv": dict(lr_policy="inv", gamma=0.0001, power=0.75),  # lenet_solver.prototxt
    "poly": dict(lr_policy="poly", power=2.0, max_iter=100),
    "sigmoid": dict(lr_policy="sigmoid", gamma=-0.1, stepsize=50),
}


def test_registry_holds_caffes_seven_policies():
    assert list(LR_POLICIES) == sorted(["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"])


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_policy_matches_caffes_formula_over_many_iterations(name):
    p = solver(**PARAMS[name])
    if name == "sigmoid":
        p.gamma = 0.1  # Caffe CHECKs gamma >= 0
    for it in range(0, 100, 7):
        rate, _ = lr_policies.learning_rate(p, it, 0)
        ref = REFERENCES[name](p, it)
        assert rate == pytest.approx(ref, rel=2e-6, abs=1e-12), (name, it)  # float32 arithmetic, as Caffe
        assert rate == float(np.float32(rate))  # a float32 value, as Caffe's Dtype rate


def test_inv_is_the_lenet_schedule():
    p = solver(**PARAMS["inv"])
    rate, _ = lr_policies.learning_rate(p, 100, 0)
    assert "%g" % rate == "0.00992565"  # the value Caffe's LeNet logs show at iteration 100


def test_step_sets_current_step_as_caffe():
    p = solver(**PARAMS["step"])
    assert lr_policies.learning_rate(p, 59, 0)[1] == 1
    assert lr_policies.learning_rate(p, 60, 0)[1] == 2


def test_multistep_is_stateful_and_advances_one_step_per_call():
    p = solver(lr_policy="multistep", gamma=0.5, stepvalue=[3, 5, 5, 9])
    cs, rates, steps = 0, [], []
    for it in range(12):
        rate, cs = lr_policies.learning_rate(p, it, cs)
        rates.append(rate)
        steps.append(cs)
    # the two stepvalues at 5 are passed on consecutive calls (Caffe's `if`, not `while`)
    assert steps == [0, 0, 0, 1, 1, 2, 3, 3, 3, 4, 4, 4]
    assert rates == pytest.approx([f(p.base_lr) * 0.5**s for s in steps], rel=1e-7)
    # resuming mid-run from the saved current_step gives the same sequence
    cs = steps[6]
    for it in range(7, 12):
        rate, cs = lr_policies.learning_rate(p, it, cs)
        assert (rate, cs) == (rates[it], steps[it])


def test_multistep_from_a_fresh_state_after_resume_differs():
    # why current_step must be saved: restarting at iter 7 with current_step 0 lags behind
    p = solver(lr_policy="multistep", gamma=0.5, stepvalue=[3, 5])
    assert lr_policies.learning_rate(p, 7, 0)[1] == 1
    assert lr_policies.learning_rate(p, 7, 2)[1] == 2


@pytest.mark.parametrize(
    "fields, needle",
    [
        (dict(lr_policy="step", stepsize=0, gamma=0.1), "stepsize > 0"),
        (dict(lr_policy="step", stepsize=10, gamma=-1), "gamma >= 0"),
        (dict(lr_policy="poly", power=1), "max_iter > 0"),
        (dict(lr_policy="sigmoid", gamma=0.1), "stepsize > 0"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_field(fields, needle):
    with pytest.raises(ConfigError, match=needle):
        lr_policies.check(solver(**fields), "s.prototxt")


def test_unknown_policy_lists_the_known_ones_and_suggests():
    with pytest.raises(UnknownTypeError) as e:
        lr_policies.learning_rate(solver(lr_policy="Step"), 0, 0, "s.prototxt")
    msg = str(e.value)
    assert "'Step'" in msg and "did you mean 'step'" in msg and "multistep" in msg


def test_missing_policy_says_so():
    with pytest.raises(ConfigError, match="lr_policy is not set"):
        lr_policies.check(solver(), "s.prototxt")
