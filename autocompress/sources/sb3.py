"""Stable-Baselines3 .zip: PPO, A2C, DQN and SAC with MlpPolicy or CnnPolicy (NatureCNN); SB3-contrib's
RecurrentPPO with MlpLstmPolicy.

Read with SB3 itself (`ALGO.load`, device cpu), then walked module by module, so any `net_arch`
(separate pi / vf, or one list for both) and any supported `activation_fn` are taken from the
model, never repeated by the user. Deterministic actions as `model.predict(obs, deterministic=True)`:
  PPO / A2C discrete  argmax of action_net logits
  PPO / A2C Box       the Gaussian mean, clipped to the action bounds (squash 'none')
  DQN                 argmax of q_net
  SAC                 tanh(mu) mapped onto the bounds (squash 'tanh')
PPO / A2C value nets come along as the critic (fine-tuned as PPO); SAC's critics do not (RLlib's
twin-Q layout differs), so a SAC critic is warmed up before fine-tuning. VecNormalize statistics
come from `vecnormalize:` or `vec_normalize.pkl` / `<stem>_vecnormalize.pkl` beside the zip.

CnnPolicy: NatureCNN's conv layers + its Linear come first. SB3 feeds it channel-first images (a
channels-last env is wrapped in VecTransposeImage, so the saved observation space is (C, H, W)) divided
by 255 when they are uint8 images (`normalize_images`): the net's input takes the env's own layout, and
the 1/255 is folded into the first conv layer's filters (exact up to float rounding: convolution is
linear and pads with zeros), so the runtime reads the env's raw observations.

RecurrentPPO (MlpLstmPolicy, read with sb3-contrib, part of the [sb3] extra): Flatten -> the actor's LSTM
(`lstm_actor`, `lstm_hidden_size` units) -> mlp_extractor's policy net -> action_net, as a recurrent PolicyNet; heads
as PPO's. One LSTM layer (`n_lstm_layers: 1`), unidirectional, without projection: anything else is one ConfigError
naming the option. Only the actor's LSTM acts, so `shared_lstm` and `enable_critic_lstm` change nothing here; the
critic (its own LSTM, the actor's, or a Linear) is not imported: a fine-tune first trains a recurrent one
(rl.default_critic) with the actor frozen (teacher.critic_warmup). `source_act` is
RecurrentPPO's own stateful `predict` (state carried, `episode_start` at each episode's first step).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from autocompress.envs import action_head
from autocompress.errors import ConfigError
from autocompress.sources import (Imported, conv_chain, linear_chain, obs_stats_from, params, to_policy_net,
                                  to_recurrent_net, with_log_std)


def _algorithm(data: dict, where: str) -> str:
    module = data.get("policy_class", {}).get("__module__", "")
    if module.endswith("dqn.policies"):
        return "DQN"
    if module.endswith("sac.policies"):
        return "SAC"
    if module.endswith("common.policies"):
        return "PPO" if "clip_range" in data else "A2C"
    if module.endswith("common.recurrent.policies"):  # sb3_contrib's RecurrentActorCriticPolicy
        return "RecurrentPPO"
    raise ConfigError(f"{where}: policy class from {module or '(unknown)'}: supported are PPO, A2C, DQN and SAC "
                      "MlpPolicy and SB3-contrib's RecurrentPPO MlpLstmPolicy")


def _algorithm_class(source: str):
    if source != "RecurrentPPO":
        import stable_baselines3 as sb3  # deferred: the [sb3] extra, checked by load
        return getattr(sb3, source)
    try:
        from sb3_contrib import RecurrentPPO  # deferred: part of the [sb3] extra too
    except ImportError:
        raise ConfigError("teacher.from: a RecurrentPPO model needs sb3-contrib (part of the sb3 extra): "
                          "pip install 'autocompress[sb3]'") from None
    return RecurrentPPO


def _vecnormalize(path: Path, explicit: str | None):
    candidates = [Path(explicit)] if explicit else [path.with_name("vec_normalize.pkl"),
                                                    path.with_name(f"{path.stem}_vecnormalize.pkl")]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        # A zip does not record whether it was trained under VecNormalize (checked: SB3 2.9 stores no flag),
        # so a model that needs statistics must name them (teacher.vecnormalize) or have them beside it.
        return None
    try:
        with open(found, "rb") as f:
            vn = pickle.load(f)  # trusted files only (documented): a pickle runs code
        vn.obs_rms.mean, vn.obs_rms.var  # noqa: B018  (fails on anything else)
    except Exception as e:
        raise ConfigError(f"teacher.vecnormalize {found}: not a VecNormalize pickle ({type(e).__name__}: {e})") from None
    return vn if vn.norm_obs else None


def load(path: Path, spec, obs_space: gym.Space, act_space: gym.Space) -> Imported:
    try:
        import stable_baselines3  # noqa: F401  (deferred: Stable-Baselines3, the [sb3] extra)
    except ImportError:
        raise ConfigError("teacher.from: a Stable-Baselines3 model needs the sb3 extra: "
                          "pip install 'autocompress[sb3]'") from None
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ConfigError(f"teacher.from {path}: not a readable Stable-Baselines3 zip ({type(e).__name__}: {e})") \
            from None
    source = _algorithm(data, f"teacher.from {path}")
    algorithm_class = _algorithm_class(source)  # outside the try: a missing sb3-contrib is its own error
    try:
        model = algorithm_class.load(str(path), device="cpu")
    except Exception as e:  # truncated policy.pth, incompatible versions ...
        raise ConfigError(f"teacher.from {path}: Stable-Baselines3 could not load it ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300]})") from None
    policy = model.policy
    where = f"teacher.from {path}"
    if source in ("PPO", "A2C"):
        extractors = {"pi": policy.pi_features_extractor, "vf": policy.vf_features_extractor}
    elif source == "RecurrentPPO":  # the critic is not imported (docstring)
        extractors = {"pi": policy.pi_features_extractor}
    else:
        extractors = {"pi": policy.q_net.features_extractor if source == "DQN" else policy.actor.features_extractor}
    features = {k: _features(e, f"{where}: {k} features extractor", model, obs_space, spec.env)
                for k, e in extractors.items()}
    if source == "RecurrentPPO" and features["pi"][1] is not None:
        raise ConfigError(f"{where}: RecurrentPPO with CnnLstmPolicy: only MlpLstmPolicy is imported yet")
    if source == "SAC" and features["pi"][1] is not None:
        raise ConfigError(f"{where}: SAC with CnnPolicy: conv policies are imported for PPO, A2C and DQN (SAC's "
                          "Q nets are RLlib's MLPs)")
    if features["pi"][1] is None and model.observation_space.shape != obs_space.shape:
        raise ConfigError(f"{where}: observation space {model.observation_space} does not match "
                          f"{spec.env}'s {obs_space}")
    if type(model.action_space) is not type(act_space) or model.action_space.shape != act_space.shape or \
            getattr(model.action_space, "n", None) != getattr(act_space, "n", None):
        raise ConfigError(f"teacher.from {path}: action space {model.action_space} does not match "
                          f"{spec.env}'s {act_space}")
    if getattr(policy, "use_sde", False) or getattr(getattr(policy, "actor", None), "use_sde", False):
        raise ConfigError(f"teacher.from {path}: use_sde=True (gSDE exploration) is not supported")
    vn = _vecnormalize(path, spec.teacher.vecnormalize)
    if vn is not None and np.shape(vn.obs_rms.mean) != obs_space.shape:
        raise ConfigError(f"teacher.vecnormalize: the statistics beside {path.name} are for observations of shape "
                          f"{np.shape(vn.obs_rms.mean)}, {spec.env}'s are {obs_space.shape}")
    head = _head(act_space, source)
    critic = None
    if source in ("PPO", "A2C", "RecurrentPPO"):
        if getattr(policy, "squash_output", False):
            raise ConfigError(f"teacher.from {path}: squash_output=True without gSDE is not a policy SB3 trains")
        chain = [(*params(m), a) for m, a in linear_chain(list(policy.mlp_extractor.policy_net), "policy_net")]
        chain.append((*params(policy.action_net), "none"))
        if isinstance(act_space, gym.spaces.Box):
            chain = with_log_std(chain, policy.log_std.detach().numpy())
        if source != "RecurrentPPO":
            value = [(*params(m), a) for m, a in linear_chain(list(policy.mlp_extractor.value_net), "value_net")]
            vf_chain, vf_input = features["vf"]
            critic = to_policy_net(vf_chain + value + [(*params(policy.value_net), "none")], vf_input)
        algorithm = "PPO"
    elif source == "DQN":
        chain = [(*params(m), a) for m, a in linear_chain(list(policy.q_net.q_net), "q_net")]
        algorithm = "DQN"
    else:
        actor = policy.actor
        chain = [(*params(m), a) for m, a in linear_chain(list(actor.latent_pi), "actor.latent_pi")]
        (wm, bm), (ws, bs) = params(actor.mu), params(actor.log_std)
        chain.append((np.concatenate([wm, ws]), np.concatenate([bm, bs]), "none"))
        algorithm = "SAC"
    pi_chain, pi_input = features["pi"]
    if source == "RecurrentPPO":
        actor_net = to_recurrent_net(pi_chain + chain, _actor_lstm(policy.lstm_actor, where))
    else:
        actor_net = to_policy_net(pi_chain + chain, pi_input)
    obs_stats = None
    if vn is not None:
        std = np.sqrt(vn.obs_rms.var + vn.epsilon)
        head["obs_norm"] = {"mean": np.asarray(vn.obs_rms.mean, np.float64).tolist(), "std": std.tolist(),
                            "clip": float(vn.clip_obs)}
        obs_stats = obs_stats_from(vn.obs_rms.mean, std)
    notes = [f"{source} {'with' if vn is not None else 'without'} VecNormalize"]
    if source == "RecurrentPPO":
        notes.append(f"the critic ({_critic_kind(policy)}) is not imported: only the actor's LSTM acts; a "
                     "fine-tune first trains a recurrent critic (teacher.critic_warmup)")
    return Imported("sb3", source, algorithm, actor_net, head, SB3Source(model, vn, head), critic, obs_stats,
                    notes=notes)


class SB3Source:
    """The model's own deterministic `predict` on one raw observation (VecNormalize applied first). A recurrent
    model's LSTM state is carried between calls and `reset()` (measure.evaluate calls it per episode) passes
    `episode_start` on the next one, as SB3-contrib's own loop does; a feed-forward model ignores both."""

    def __init__(self, model, vn, head: dict):
        self.model, self.vn, self.discrete = model, vn, head["kind"] == "discrete"
        self.state, self.start = None, True

    def reset(self) -> None:
        self.start = True

    def __call__(self, obs: np.ndarray):
        x = np.asarray(obs, np.float32)[None]
        if self.vn is not None:
            x = self.vn.normalize_obs(x)
        a, self.state = self.model.predict(x, state=self.state, episode_start=np.array([self.start]),
                                           deterministic=True)
        self.start = False
        return int(a[0]) if self.discrete else a[0]


#: nn.LSTM attribute -> (how a RecurrentPPO user sets it, the one value imported)
LSTM_OPTIONS = {"num_layers": ("n_lstm_layers", 1), "bidirectional": ("lstm_kwargs bidirectional", False),
                "proj_size": ("lstm_kwargs proj_size", 0)}


def _actor_lstm(lstm, where: str) -> dict:
    """RecurrentPPO's actor LSTM as a sources.to_recurrent_net cell; it reads the (flattened) observation, at 0."""
    for attr, (option, supported) in LSTM_OPTIONS.items():
        if getattr(lstm, attr) != supported:
            raise ConfigError(f"{where}: {option}={getattr(lstm, attr)}: not supported; autocompress imports one "
                              f"unidirectional LSTM layer without projection ({option}={supported})")
    w = {k: v.detach().cpu().numpy() for k, v in lstm.state_dict().items()}
    return {"cell": "lstm", "at": 0, "w_ih": w["weight_ih_l0"], "w_hh": w["weight_hh_l0"],
            "b_ih": w.get("bias_ih_l0"), "b_hh": w.get("bias_hh_l0")}  # lstm_kwargs bias=False: no biases


def _critic_kind(policy) -> str:
    if policy.shared_lstm:
        return "shared_lstm: the actor's LSTM"
    return "enable_critic_lstm: its own LSTM" if policy.enable_critic_lstm else "a Linear on the features"


def _features(extractor, where: str, model, obs_space: gym.Space, env: str) -> tuple[list, dict | None]:
    """A features extractor as layers: none for Flatten, NatureCNN's convs + Linear (the first filters
    times 1/255 where SB3 divides uint8 images by 255); and the net's input (None: flat observations)."""
    name = type(extractor).__name__
    if name == "FlattenExtractor":
        return [], None
    if name != "NatureCNN":
        raise ConfigError(f"{where}: custom features extractor {name} (autocompress imports MlpPolicy nets and "
                          "CnnPolicy's NatureCNN)")
    from stable_baselines3.common.preprocessing import is_image_space  # deferred: the [sb3] extra

    layout = _layout(tuple(model.observation_space.shape), tuple(obs_space.shape), where, env)
    scale = 1 / 255 if model.policy.normalize_images and is_image_space(model.observation_space) else 1.0
    convs, _ = conv_chain(list(extractor.cnn), f"{where}.cnn", tuple(model.observation_space.shape), scale)
    linear = [(*params(m), a) for m, a in linear_chain(list(extractor.linear), f"{where}.linear")]
    return convs + linear, {"shape": list(obs_space.shape), "layout": layout}


def _layout(model_shape: tuple, env_shape: tuple, where: str, env: str) -> str:
    """How the env's observations reach NatureCNN's channel-first input: as they are ('chw'), or
    transposed from channels-last ('hwc', SB3's VecTransposeImage)."""
    if len(env_shape) != 3:
        raise ConfigError(f"{where}: NatureCNN reads images (C, H, W) = {model_shape}; {env}'s observations have "
                          f"shape {env_shape}")
    if env_shape == model_shape:
        return "chw"
    c, h, w = model_shape
    if env_shape == (h, w, c):
        return "hwc"
    raise ConfigError(f"{where}: NatureCNN reads images (C, H, W) = {model_shape}; {env}'s observations "
                      f"{env_shape} are neither that nor channels-last {(h, w, c)}")


def _head(act_space: gym.Space, source: str) -> dict:
    head = action_head(act_space)
    if head["kind"] == "continuous":
        head["squash"] = "tanh" if source == "SAC" else "none"
    elif source == "SAC":
        raise ConfigError("a SAC model needs a Box action space")
    return head
