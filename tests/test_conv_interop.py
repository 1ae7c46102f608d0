"""Conv policies in and out: the ONNX export (fp32 and int8) and the MLflow pyfunc model act like the numpy
runtime on MinAtar-like images; RLlib CNN checkpoints and SB3 CnnPolicy zips import as conv PolicyNets
that act like the source framework."""

from pathlib import Path

import gymnasium as gym
import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import autocompress as ac
from autocompress import exports, tracking
from autocompress.artifact import to_bytes
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy
from test_export import build
from test_exports import assert_same_actions
from test_import import spec_for

DISCRETE = {"kind": "discrete", "n": 3}
TANH = {"kind": "continuous", "act_dim": 2, "low": [-2.0, 0.0], "high": [2.0, 1.0], "squash": "tanh"}
FILTERS = [[16, [3, 3], 1, "same"], [8, 3, 2]]  # 'same' then stride 2 with an odd pad at the bottom / right


def images(n: int, shape=(10, 10, 4), seed: int = 0) -> np.ndarray:
    """MinAtar-like binary images."""
    return (np.random.default_rng(seed).random((n, *shape)) > 0.8).astype(np.float32)


def conv_artifact(layout: str, cfg: dict, head: dict) -> tuple[bytes, np.ndarray]:
    shape = (10, 10, 4) if layout == "hwc" else (4, 10, 10)
    obs = images(1000, shape)
    torch.manual_seed(0)
    net = PolicyNet.cnn(shape, layout, FILTERS, [32], 3 if head["kind"] == "discrete" else 4)
    return to_bytes(build(net, obs[:200], cfg), head), obs


@pytest.mark.parametrize("layout, head", [("hwc", "discrete"), ("chw", "discrete"), ("hwc", "continuous")])
@pytest.mark.parametrize("case", ["teacher", "q4", "prune80+q6"])
def test_onnx_conv_fp32_and_int8_act_like_the_runtime(layout, case, head, tmp_path):
    cfg = {"teacher": {}, "q4": {"quantize": {"bits": 4}},
           "prune80+q6": {"prune": {"sparsity": 0.8}, "quantize": {"bits": 6}}}[case]
    data, obs = conv_artifact(layout, cfg, DISCRETE if head == "discrete" else TANH)
    int8 = exports.int8_kernels(data)
    assert (int8[:2] == ["int8", "int8"]) == (case != "teacher")  # the conv layers really run int8
    for fmt, acts_as in (("onnx", None), ("onnx-int8", int8)):
        path = exports.write(data, fmt, tmp_path / "p.onnx")[0]
        model = onnx.load(str(path))
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == list(obs.shape[1:])
        ops = [n.op_type for n in model.graph.node]
        int8_convs = 2 if acts_as is not None and case != "teacher" else 0
        assert ops.count("ConvInteger") == int8_convs and ops.count("Conv") == 2 - int8_convs
        assert ("Transpose" in ops) == (layout == "hwc")
        got = ort.InferenceSession(str(path)).run(None, {"obs": obs})[0]
        assert_same_actions(got, NumpyPolicy.from_bytes(data, acts_as), obs, f"{layout} {case} {fmt}")


def test_onnx_int8_conv_filters_are_stored_as_int8(tmp_path):
    data, _ = conv_artifact("hwc", {"quantize": {"bits": 4}}, DISCRETE)
    model = onnx.load(str(exports.write(data, "onnx-int8", tmp_path / "p.onnx")[0]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "ConvInteger"]
    assert [inits[n.input[1]].shape for n in convs] == [(16, 4, 3, 3), (8, 16, 3, 3)]
    assert all(inits[n.input[1]].dtype == np.int8 for n in convs)
    assert [inits[f"L{i}_qscale"].shape for i in (0, 1)] == [(1, 16, 1, 1), (1, 8, 1, 1)]  # per output channel
    assert not any(v.shape in ((16, 4, 3, 3), (8, 16, 3, 3)) for v in inits.values() if v.dtype != np.int8)
    fp32 = exports.write(data, "onnx", tmp_path / "f.onnx")[0]
    assert (tmp_path / "p.onnx").stat().st_size * 2 < fp32.stat().st_size


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_pyfunc_model_of_a_conv_net_takes_images(layout, tmp_path):
    data, obs = conv_artifact(layout, {"quantize": {"bits": 4}}, DISCRETE)
    acz = tmp_path / "policy.acz"
    acz.write_bytes(data)
    path = tracking.save_policy_model(tmp_path / "model", acz, {"runtime": "numpy"})
    model = mlflow.pyfunc.load_model(str(path))
    inputs = model.metadata.get_input_schema().inputs[0]
    assert inputs.type == np.dtype(np.float32) and inputs.shape == (-1, *obs.shape[1:])
    actions = model.predict(obs[:64])
    ref = NumpyPolicy.from_bytes(data)
    assert actions.dtype == np.int64 and (actions == [ref.act(o) for o in obs[:64]]).all()
    with pytest.raises(Exception, match="shape"):  # flat rows do not fit the signature
        model.predict(obs[:4].reshape(4, -1))


# -- imports: SB3 CnnPolicy (NatureCNN) ------------------------------------------------------------

class PixelToy(gym.Env):
    """uint8 channels-last images of NatureCNN's smallest size: 36x36 (8x8/4 -> 8x8, 4x4/2 -> 3x3, 3x3/1 -> 1x1)."""
    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, config: dict | None = None):  # RLlib passes its env_config
        super().__init__()
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(action == 0), self.t >= 20, False, {}


class PixelToyCHW(PixelToy):
    observation_space = gym.spaces.Box(0, 255, (3, 36, 36), np.uint8)


class PixelToyWide(PixelToy):  # 4 channels: fits no 3-channel CnnPolicy either way round
    observation_space = gym.spaces.Box(0, 255, (36, 36, 4), np.uint8)


class PixelToyBox(PixelToy):  # continuous actions, for SAC
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


ENVS = {"hwc": "test_conv_interop:PixelToy", "chw": "test_conv_interop:PixelToyCHW"}


def sb3_cnn_zip(algo: str, env_cls: type, path: Path) -> Path:
    sb3 = pytest.importorskip("stable_baselines3")
    kw = {"buffer_size": 100, "learning_starts": 0} if algo in ("DQN", "SAC") else {"n_steps": 16, "batch_size": 16}
    model = getattr(sb3, algo)("CnnPolicy", env_cls(), seed=0, device="cpu", **kw)
    model.save(path)
    return path


def sb3_outputs(model, obs: np.ndarray) -> np.ndarray:
    """SB3's own logits (as log-probabilities) or Q-values, its preprocessing (transpose, / 255) included."""
    policy = model.policy
    x, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        if hasattr(policy, "q_net"):
            return policy.q_net(x).numpy()
        return policy.get_distribution(x).distribution.logits.numpy()


@pytest.mark.parametrize("algo", ["PPO", "DQN"])
@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_sb3_cnn_policy_imports_as_a_conv_net_that_acts_like_model_predict(algo, layout, tmp_path):
    from autocompress import sources

    env_cls = PixelToy if layout == "hwc" else PixelToyCHW
    zip_path = sb3_cnn_zip(algo, env_cls, tmp_path / f"{algo}.zip")
    spec = ac.load_trial_spec(spec_for(tmp_path, algo.lower(), ENVS[layout], algo, zip_path))
    imported = sources.load(spec)
    net = imported.actor
    assert net.conv_layers == 3 and net.input == {"shape": list(env_cls.observation_space.shape), "layout": layout}
    assert imported.describe()[:4] == ["conv 8x8/4x4 3->32 relu", "conv 4x4/2x2 32->64 relu",
                                       "conv 3x3/1x1 64->64 relu", "64->512 relu"]
    obs = np.stack([env_cls.observation_space.sample() for _ in range(256)])  # raw uint8, as the env gives them
    policy = ac.Policy.from_net(net, imported.head, "numpy")
    ours = np.array([policy.act(o) for o in obs])
    sb3_actions = np.array([imported.source_act(o) for o in obs])
    out = sb3_outputs(_model(zip_path, algo), obs)
    top = np.sort(out, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-5  # 1/255 folded into the filters: only near-ties may flip
    assert clear.mean() > 0.95 and (ours[clear] == sb3_actions[clear]).all()
    with torch.no_grad():
        logits = net(torch.as_tensor(obs.astype(np.float32))).numpy()
    if algo == "PPO":  # SB3's Categorical logits are log-probabilities
        logits = torch.log_softmax(torch.as_tensor(logits), 1).numpy()
        assert imported.critic is not None and imported.critic.input == net.input
    np.testing.assert_allclose(logits, out, atol=1e-4)


def _model(zip_path: Path, algo: str):
    import stable_baselines3 as sb3

    return getattr(sb3, algo).load(str(zip_path), device="cpu")


def test_sb3_cnn_policy_on_observations_it_does_not_read_is_one_clear_error(tmp_path):
    from autocompress import sources
    from autocompress.errors import ConfigError

    zip_path = sb3_cnn_zip("PPO", PixelToy, tmp_path / "ppo.zip")
    for env, words in (("test_conv_interop:PixelToyWide", ["NatureCNN reads images (C, H, W) = (3, 36, 36)",
                                                          "(36, 36, 4)", "neither"]),
                       ("CartPole-v1", ["NatureCNN reads images", "shape (4,)"])):
        spec = ac.load_trial_spec(spec_for(tmp_path, "bad", env, "PPO", zip_path))
        with pytest.raises(ConfigError) as e:
            sources.load(spec)
        assert all(w in str(e.value) for w in words) and str(zip_path) in str(e.value), str(e.value)
    sac = sb3_cnn_zip("SAC", PixelToyBox, tmp_path / "sac.zip")
    with pytest.raises(ConfigError, match="SAC with CnnPolicy"):
        sources.load(ac.load_trial_spec(spec_for(tmp_path, "sac", "test_conv_interop:PixelToyBox", "SAC", sac)))


# -- imports: RLlib checkpoints with RLlib's CNN encoder --------------------------------------------

MINATAR = "autocompress.minatar_env:MinAtar"
CNN_MODEL = {"conv_filters": [[16, 3, 1], [8, [3, 3], 2], [8, 2, 1, "valid"]], "conv_activation": "relu",
             "head_fcnet_hiddens": [32], "head_fcnet_activation": "tanh"}  # 'same' (odd pads), stride 2, valid


def rllib_cnn_checkpoint(kind: str, path: Path) -> Path:
    """An untrained PPO / DQN Algorithm on MinAtar Breakout (10x10x4) with RLlib's CNN encoder, saved."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.algorithms.ppo import PPOConfig

    from autocompress.minatar_env import MinAtar

    base = PPOConfig() if kind == "ppo" else DQNConfig().training(dueling=kind == "dqn-dueling")
    algo = base.environment(MinAtar, env_config={"game": "breakout"}).env_runners(num_env_runners=0) \
        .learners(num_learners=0).rl_module(model_config=CNN_MODEL).debugging(seed=0).build_algo()
    try:
        algo.save_to_path(str(path))
    finally:
        algo.stop()
    return path


@pytest.mark.slow
def test_rllib_cnn_checkpoints_import_as_conv_nets_that_act_like_the_rl_module(tmp_path):
    """PPO, DQN and dueling DQN: argmax actions equal RLlib's forward_inference on 256 images, logits /
    Q-values (and PPO's value) close; a checkpoint for other images is one clear error."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    from autocompress import rl, sources
    from autocompress.errors import ConfigError

    rl.ensure_ray()
    obs = images(256)
    batch = {Columns.OBS: torch.as_tensor(obs)}
    for kind in ("ppo", "dqn", "dqn-dueling"):
        algorithm = kind[:3].upper()
        ckpt = rllib_cnn_checkpoint(kind, tmp_path / kind)
        spec = ac.load_trial_spec(spec_for(tmp_path, kind, MINATAR, algorithm, ckpt))
        imported = sources.load(spec)
        net = imported.actor
        assert net.conv_layers == 3 and net.input == {"shape": [10, 10, 4], "layout": "hwc"}, kind
        assert [layer.conv["pad"] for layer in net.layers[:3]] == [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]]
        module = RLModule.from_checkpoint(str(ckpt / "learner_group" / "learner" / "rl_module" / "default_policy"))
        want = rl.module_actions(module, obs, None, gym.spaces.Discrete(3))
        policy = ac.Policy.from_net(net, imported.head, "numpy")
        assert [policy.act(o) for o in obs] == want.tolist(), kind
        with torch.no_grad():
            ours = net(torch.as_tensor(obs)).numpy()
            ref = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS] if kind == "ppo" else \
                module.compute_q_values(batch)["qf_preds"]
            np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5, err_msg=kind)
            if kind == "ppo":
                values = module.compute_values(batch).numpy()
                np.testing.assert_allclose(imported.critic(torch.as_tensor(obs))[:, 0].numpy(), values, atol=1e-5)
    bad = ac.load_trial_spec(spec_for(tmp_path, "bad", MINATAR, "PPO", tmp_path / "ppo"))
    bad = bad.model_copy(update={"env_config": {"game": "space_invaders"}})  # 10x10x6 images
    with pytest.raises(ConfigError, match="observation space"):
        sources.load(bad)
