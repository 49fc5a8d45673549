"""DLR recipe: latent-space contrastive RL with a frozen main model.

    latentrl train dlr --config configs/dlr_arith_tiny.yaml [key.sub=value ...] [--resume]

Each step: G latent samples per question from the assistant's Gaussian policy; a value
head picks the K most promising (plus ``explore`` random ones) to decode; the frozen main
model decodes them greedily in one rollout-engine call; the dual reward scores them;
``ppo_epochs`` passes of a PPO-clipped objective on the latent log-probs (group-normalised
advantages, optional closed-form KL to the initial policy) plus a contrastive term on the
latents and the value head's regression loss.

Simplified relative to the paper (which publishes no code): the reconstruction of
DESIGN.md ("DLR"); decoding is greedy so a latent's reward is a function of the latent;
evaluation feeds the policy's mean latent; the optional warm start trains assistant and
projector by cross-entropy of the gold solution through the frozen main model.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from latentrl.config import ConfigError, DLRConfig, load_config
from latentrl.io import write_json
from latentrl.losses import (
    PPOClipLoss,
    answer_token_probability,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    get_advantage_estimator,
    likelihood_reward,
    make_contrastive_loss,
    value_loss,
)
from latentrl.models.latent_plugin import (
    LatentPlugin,
)
from latentrl.models.loading import fingerprint, load_input_embeddings
from latentrl.models.named import resolve_model
from latentrl.rewards import DualReward
from latentrl.rollout import RolloutEngine, SamplingParams, make_engine
from latentrl.tasks import get_task
from latentrl.trainers.common import (
    EpochSampler,
    Recipe,
    accumulated_step,
    gather_with_grad,
    mean_over_processes,
    process_share,
    require_even_split,
)
from latentrl.trainers.metrics import reward_trend

LIKELIHOOD_BATCH = 64
"""Sequences per teacher-forced forward pass of the main model for the likelihood reward."""


class Rollout(NamedTuple):
    """One step's decoded trajectories (Q questions, K decoded latents each)."""

    input_ids: torch.Tensor  # [Q, L] assistant input: question + N placeholders
    attention_mask: torch.Tensor  # [Q, L]
    z: torch.Tensor  # [Q, K, N, d_z] decoded latents
    eps: torch.Tensor  # [Q, K, N, d_z] their standard-normal noise
    logp_old: torch.Tensor  # [Q, K] behaviour log-probs
    rewards: torch.Tensor  # [Q, K] total reward, NaN where it could not be judged
    correct: torch.Tensor  # [Q, K]
    formatted: torch.Tensor  # [Q, K]
    tokens_decoded: int
    seconds: dict[str, float]  # sample / decode / reward wall time
    answer_probability: torch.Tensor | None  # [Q, K + 1] likelihood scores, the mean's last


def select_for_decoding(
    values: torch.Tensor, k: int, explore: int, uniforms: torch.Tensor
) -> torch.Tensor:
    """Indices [Q, K] of the samples to decode: the top K - explore by predicted value,
    then ``explore`` of the rest chosen by ``uniforms`` [Q, G] (uniform noise, so drawn at
    random). With K = G, every sample."""
    num_questions, group = values.shape
    if k == group:
        return torch.arange(group, device=values.device).expand(num_questions, group)
    order = values.argsort(dim=1, descending=True)
    best = order[:, : k - explore]
    if explore == 0:
        return best
    rest = order[:, k - explore :]
    picks = uniforms[:, : rest.shape[1]].argsort(dim=1)[:, :explore]
    return torch.cat([best, rest.gather(1, picks)], dim=1)


class DLRTrainer(Recipe):
    """setup() -> warm_start() -> train() -> cleanup(); see :func:`main`."""

    name = "DLR"
    curve_keys = ("reward_mean", "accuracy", "decodes_saved", "contrastive_loss")

    def __init__(
        self, cfg: DLRConfig, resume: bool = False, engine: RolloutEngine | None = None
    ) -> None:
        """``engine``: a rollout engine already serving ``cfg.main_model``, shared with the
        caller (who closes it), e.g. one engine for several seeds; None starts one."""
        super().__init__(cfg, resume)
        self.shared_engine = engine

    # ---- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self._check_models()  # before any weights load
        self.open_run("questions_per_step", "questions", generators={"sample": 0, "data": 1})
        self.task = get_task(cfg.task.name)
        self.train_rows = self.task.load("train", **cfg.task.options)
        self.eval_rows = self.task.load("test", limit=cfg.eval_problems, **cfg.task.options)

        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.main_model))
        if cfg.rollout.backend == "vllm_server" and not (
            cfg.warm_start_steps or cfg.likelihood_weight
        ):
            # A vLLM server decodes: the trainer needs the main model's token embeddings
            # only (the warm start and the likelihood reward run all of it).
            self.main_model = None
            self.main_embeddings = load_input_embeddings(cfg.main_model).to(self.device)
        else:
            # Frozen, so no prepared module: placed on accelerate's device here.
            self.main_model = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.main_model))
            self.main_model.requires_grad_(False).eval().to(self.device)
            self.main_embeddings = self.main_model.get_input_embeddings()
        self.main_fingerprint = fingerprint(self._frozen_main)
        self.engine = self.shared_engine or make_engine(cfg.main_model, cfg.rollout)

        self.policy = LatentPlugin.for_main_model(
            cfg.plugin, cfg.main_model, self.main_embeddings, self.tokenizer, cfg.assistant_model
        )
        self.reference = None
        if cfg.kl_coef > 0:
            self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
            self.reference.to(self.device)
        # ``plugin`` trains (under several processes: the DDP wrapper of ``policy``); the
        # module itself is kept rather than unwrapped at each use (unwrap_model walks every
        # module: under LoRA it took a third of a step).
        self.plugin = self.prepare_training(
            self.policy, [p for p in self.policy.parameters() if p.requires_grad]
        )
        self._build_objective()
        self.sampler = EpochSampler(self.train_rows, self.generators["data"], self.state)
        self.start_or_resume()

    def _build_objective(self) -> None:
        """The dual reward, PPO's clipped loss, the advantage estimator and the contrastive term."""
        cfg = self.cfg
        self.reward = DualReward(
            cfg.correctness_weight, cfg.format_weight, format={"style": self.task.answer_format}
        )
        self.ppo = PPOClipLoss(
            clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef, entropy_coef=cfg.entropy_coef
        )
        self.advantages = get_advantage_estimator(cfg.advantage)
        self.advantage_options = (
            {"normalize_std": cfg.normalize_std} if cfg.advantage == "grpo" else {}
        )
        self.contrastive = None
        if cfg.contrastive != "none":
            options = {"tau": cfg.contrastive_tau}
            if cfg.contrastive in ("mv_infonce", "mv_dhel"):
                options["num_views"] = cfg.contrastive_views
            self.contrastive = make_contrastive_loss(cfg.contrastive, **options)

    def _check_models(self) -> None:
        cfg = self.cfg
        if not cfg.main_model:
            raise ConfigError("missing required key 'main_model' (a model folder or Hub id)")
        main = AutoConfig.from_pretrained(resolve_model(cfg.main_model))
        if cfg.plugin.projector == "none" and cfg.plugin.latent_dim != main.hidden_size:
            assistant = AutoConfig.from_pretrained(
                resolve_model(cfg.assistant_model or cfg.main_model)
            )
            raise ConfigError(
                f"plugin.projector: 'none' injects latents as they are, but latent_dim "
                f"{cfg.plugin.latent_dim} (assistant width {assistant.hidden_size}) differs from "
                f"the main model's hidden size {main.hidden_size}; use a linear or mlp projector"
            )

    # ---- shared pieces -------------------------------------------------------------------

    @property
    def _frozen_main(self) -> torch.nn.Module:
        """What the trainer holds of the main model: all of it, or its embeddings alone."""
        return self.main_model if self.main_model is not None else self.main_embeddings

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's tensor along dim 0 (in process order)."""
        return self.accelerator.gather(tensor.to(self.device))

    def _prompt_embeds(self, rows: Sequence[dict], latents: torch.Tensor) -> list[torch.Tensor]:
        """Main-model inputs for rows [Q] and projected latents [Q, K, N, H] -> Q*K tensors."""
        embed = self.main_embeddings
        with torch.no_grad():
            return [
                self.policy.inject(embed, self.tokenizer, row["prompt"], vectors)
                for row, group in zip(rows, latents, strict=True)
                for vectors in group
            ]

    def _score(self, rows: Sequence[dict], texts: list[str], per_row: int):
        """Dual reward, correctness and format [Q, per_row] of ``texts`` (NaN: not judged)."""
        golds = [row["answer"] for row in rows for _ in range(per_row)]
        dual, correct, formatted = self.reward.score_parts(None, texts, answer=golds)

        def tensor(values):
            numbers = [math.nan if v is None else v for v in values]
            return torch.tensor(numbers, device=self.device).view(len(rows), per_row)

        return tensor(dual), tensor(correct), tensor(formatted)

    # ---- warm start ----------------------------------------------------------------------

    def warm_start(self) -> None:
        """Supervised: cross-entropy of the gold solution given sampled latents, through the
        frozen main model (trains assistant, latent head and projector). Each process takes
        a contiguous share of every batch; DDP averages the gradients."""
        cfg = self.cfg
        if cfg.warm_start_steps == 0 or self.state.step > 0:
            return
        require_even_split(
            self.accelerator, "warm_start_batch_size", cfg.warm_start_batch_size, "questions"
        )
        policy = self.policy
        optimizer = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad], lr=cfg.warm_start_learning_rate
        )
        shape = (cfg.warm_start_batch_size, cfg.plugin.num_latents, cfg.plugin.latent_dim)
        bar = tqdm(
            range(cfg.warm_start_steps),
            desc="warm start",
            disable=not self.accelerator.is_main_process,
        )
        for _ in bar:
            # The whole batch and its noise on every process, so the data order and the
            # trained plugin do not depend on the number of processes.
            picks = torch.randint(
                len(self.train_rows),
                (cfg.warm_start_batch_size,),
                generator=self.generators["data"],
            )
            noise = torch.randn(shape, generator=self.generators["sample"])
            share = process_share(self.accelerator, cfg.warm_start_batch_size)
            rows = [self.train_rows[i] for i in picks[share].tolist()]
            loss = self._warm_start_loss(rows, noise[share])
            self.accelerator.backward(loss)
            self.accelerator.clip_grad_norm_(self.plugin.parameters(), cfg.loop.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if cfg.warm_start_reset_std:
            policy.reset_log_std()

    def _warm_start_loss(self, rows: Sequence[dict], noise: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over every process's solution tokens; this process's part."""
        encoded = self.policy.encode_questions([r["question"] for r in rows])
        input_ids, mask = (t.to(self.device) for t in encoded)
        _, latents = self.plugin(input_ids, mask, noise=noise.to(self.device))  # [B, N, H], DDP
        inputs, labels, mask = self._solution_inputs(rows, latents)
        logits = self.main_model(inputs_embeds=inputs, attention_mask=mask).logits
        summed = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum"
        )
        # DDP averages the processes' gradients, so each divides by all tokens / processes.
        tokens = (labels[:, 1:] != -100).sum()
        total = self.accelerator.gather(tokens[None]).sum()
        return summed * self.accelerator.num_processes / total

    # ---- RL ------------------------------------------------------------------------------

    @torch.no_grad()
    def _rollout(self, rows: list[dict]) -> Rollout:
        """Sample, select, decode and score this process's share of a step's questions."""
        cfg, policy = self.cfg, self.policy
        started = time.perf_counter()
        # Every process draws the noise of the whole step and keeps its share, so the random
        # streams, and a resumed run, do not depend on the number of processes.
        settings = cfg.plugin
        shape = (len(rows), cfg.group_size, settings.num_latents, settings.latent_dim)
        eps = torch.randn(shape, generator=self.generators["sample"])  # [Q, G, N, d_z]
        uniforms = torch.rand(shape[:2], generator=self.generators["sample"])
        share = process_share(self.accelerator, len(rows))
        rows = rows[share]
        eps, uniforms = eps[share].to(self.device), uniforms[share].to(self.device)
        input_ids, mask = (
            t.to(self.device) for t in policy.encode_questions([r["question"] for r in rows])
        )
        dist = policy.distribution(input_ids, mask)
        z = dist.mean[:, None] + dist.log_std.exp()[:, None] * eps
        values = policy.value(dist.features, z)  # [Q, G]
        chosen = select_for_decoding(values, cfg.decode_k, cfg.explore, uniforms)
        index = chosen[:, :, None, None].expand(-1, -1, *z.shape[2:])
        z, eps = z.gather(1, index), eps.gather(1, index)  # [Q, K, N, d_z]
        logp_old = gaussian_log_prob(
            z, dist.mean[:, None], dist.log_std[:, None], event_dims=2
        )  # [Q, K]

        projected = policy.projector(z)  # [Q, K, N, H]
        prompts = self._prompt_embeds(rows, projected)
        sampled = time.perf_counter()
        params = SamplingParams(
            temperature=cfg.decode_temperature,
            max_tokens=cfg.decode_max_tokens,
            # One seed would give every request the same sampling noise, so sampled decodes
            # of a group would differ only through their latents.
            seed=cfg.seed + self.state.step if cfg.decode_temperature == 0 else None,
        )
        outputs = self.engine.generate(prompts, params)
        decoded = time.perf_counter()
        completions = [out.completions[0] for out in outputs]
        rewards, correct, formatted = self._score(rows, [c.text for c in completions], cfg.decode_k)
        scores = None
        if cfg.likelihood_weight:
            at_mean = policy.projector(dist.mean)[:, None]  # [Q, 1, N, H]
            scores = self._answer_probability(rows, torch.cat([projected, at_mean], dim=1))
            dense = likelihood_reward(scores[:, :-1], scores[:, -1])
            rewards = rewards + cfg.likelihood_weight * dense
        seconds = {
            "sample_time": sampled - started,
            "decode_time": decoded - sampled,
            "reward_time": time.perf_counter() - decoded,
        }
        return Rollout(
            input_ids, mask, z, eps, logp_old, rewards, correct, formatted,
            tokens_decoded=sum(len(c.token_ids) for c in completions),
            seconds=seconds,
            answer_probability=scores,
        )  # fmt: skip

    def _answer_probability(self, rows: Sequence[dict], latents: torch.Tensor) -> torch.Tensor:
        """The frozen main model's mean per-token probability of each row's gold solution,
        teacher-forced, given each of its M projected latents [Q, M, N, H] -> [Q, M]."""
        repeated = [row for row in rows for _ in range(latents.shape[1])]
        inputs, labels, mask = self._solution_inputs(repeated, latents.flatten(0, 1))
        scores = [
            answer_token_probability(
                self.main_model(inputs_embeds=inputs[part], attention_mask=mask[part]).logits,
                labels[part],
            )
            for part in (
                slice(i, i + LIKELIHOOD_BATCH) for i in range(0, len(repeated), LIKELIHOOD_BATCH)
            )
        ]
        return torch.cat(scores).view(latents.shape[:2])

    def _solution_inputs(self, rows: Sequence[dict], latents: torch.Tensor):
        """Teacher-forced main-model inputs, labels and mask for the rows' gold solutions
        given projected latents [B, N, H] (see :meth:`LatentPlugin.solution_inputs`)."""
        return self.policy.solution_inputs(
            self.main_embeddings, self.tokenizer, [row["prompt"] for row in rows],
            [self.task.target(row) for row in rows], latents,
        )  # fmt: skip

    def _update(self, rollout: Rollout) -> dict[str, float]:
        """``ppo_epochs`` optimiser steps on this batch; with gradient accumulation, each is
        accumulated by accelerate over micro-batches of this process's questions."""
        cfg = self.cfg
        advantages = self.advantages(rollout.rewards, **self.advantage_options)
        parts = cfg.loop.gradient_accumulation_steps
        size = len(rollout.rewards) // parts
        micro_batches = [slice(i * size, (i + 1) * size) for i in range(parts)]
        for _ in range(cfg.ppo_epochs):  # the last epoch's stats are logged
            stats = accumulated_step(
                self.accelerator, self.plugin, self.optimizer, cfg.loop.max_grad_norm,
                (partial(self._loss, rollout, advantages, part) for part in micro_batches),
            )  # fmt: skip
        self.scheduler.step()
        return mean_over_processes(self.accelerator, stats)

    def _loss(
        self, rollout: Rollout, advantages: torch.Tensor, part: slice
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The whole objective on the questions ``part`` of this process's batch."""
        cfg = self.cfg
        input_ids, mask = rollout.input_ids[part], rollout.attention_mask[part]
        z, eps, rewards = rollout.z[part], rollout.eps[part], rollout.rewards[part]
        dist, predicted = self.plugin(input_ids, mask, z)
        mean, log_std = dist.mean[:, None], dist.log_std[:, None]  # [Q, 1, N, d_z]
        logp = gaussian_log_prob(z, mean, log_std, event_dims=2)  # [Q, K]
        kl = None
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference.distribution(input_ids, mask)
            kl = gaussian_kl(dist.mean, dist.log_std, ref.mean, ref.log_std)  # [Q]
            kl = kl[:, None].expand_as(logp).flatten()
        entropy = gaussian_entropy(dist.log_std)[:, None].expand_as(logp).flatten()
        loss, stats = self.ppo(
            logp.flatten(),
            rollout.logp_old[part].flatten(),
            advantages[part].flatten(),
            kl=kl,
            entropy=entropy,
        )
        if self.contrastive is not None:
            # The same noise through the current policy: gradients reach mean and std.
            # Negatives come from every process's questions, as in one process. The term
            # needs a number for every latent: an unjudged one counts as a failure here (it
            # is also excluded from advantages and counted in `unjudged`).
            z_now = gather_with_grad(self.accelerator, (mean + log_std.exp() * eps).flatten(2))
            contrast, contrast_stats = self.contrastive(
                z_now, self._gather(rewards.nan_to_num(0.0))
            )
            loss = loss + cfg.contrastive_weight * contrast
            stats.update(contrast_stats)
        judged = ~rewards.isnan()
        v_loss, v_stats = value_loss(predicted[judged], rewards[judged])
        stats.update(v_stats)
        stats["latent_std"] = dist.log_std.exp().mean().item()
        # The projector normalises each latent's scale, so what the noise does depends on
        # the std relative to the mean's size, which the warm start can grow. (A mean, not
        # an RMS: averaged over processes it is the same as over the whole batch.)
        stats["latent_mean_abs"] = dist.mean.abs().mean().item()
        return loss + cfg.value_coef * v_loss, stats

    def train(self) -> None:
        cfg = self.cfg
        bar = self.progress_bar()
        while self.state.step < cfg.loop.steps:
            started = time.perf_counter()
            rows = self.sampler.draw(self.cfg.questions_per_step)
            rollout = self._rollout(rows)
            updating = time.perf_counter()
            stats = self._update(rollout)
            update_time = time.perf_counter() - updating
            self.state.step += 1
            # Metrics over the whole step's questions, from every process.
            rewards = self._gather(rollout.rewards)
            tokens = self._gather(torch.tensor([rollout.tokens_decoded])).sum().item()
            group_std = rewards.nan_to_num(0.0).std(dim=1, unbiased=False)
            correct = self._gather(rollout.correct).nan_to_num(0.0)
            metrics = {
                "reward_mean": rewards.nanmean().item(),
                "reward_std": rewards[~rewards.isnan()].std(unbiased=False).item(),
                "accuracy": self._gather(rollout.correct).nanmean().item(),
                "format_rate": self._gather(rollout.formatted).nanmean().item(),
                "zero_std_groups": (group_std == 0).float().mean().item(),
                "mixed_outcome_groups": (correct.amax(1) > correct.amin(1)).float().mean().item(),
                "unjudged": int(rewards.isnan().sum()),
                "decodes_saved": 1 - cfg.decode_k / cfg.group_size,
                "main_tokens_decoded": tokens,
                "lr": self.scheduler.get_last_lr()[0],
                **self._likelihood_metrics(rollout),
                **rollout.seconds,
                "update_time": update_time,
                "step_time": time.perf_counter() - started,
                **stats,
            }
            if cfg.eval_every and self.state.step % cfg.eval_every == 0:
                metrics.update(self._evaluate_and_keep_best())
            self.end_step(
                bar,
                metrics,
                reward=f"{metrics['reward_mean']:.3f}",
                acc=f"{metrics['accuracy']:.3f}",
            )
        bar.close()

    def _likelihood_metrics(self, rollout: Rollout) -> dict[str, float]:
        """The likelihood reward's mean over samples, and the gold answer's probability at
        the mean latent (a dense measure of progress), over every process's questions."""
        if rollout.answer_probability is None:
            return {}
        scores = self._gather(rollout.answer_probability)
        return {
            "likelihood_reward": likelihood_reward(scores[:, :-1], scores[:, -1]).mean().item(),
            "answer_probability": scores[:, -1].mean().item(),
        }

    # ---- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, with_plugin: bool) -> dict[str, float]:
        """Greedy accuracy on the held-out rows, with the plugin's mean latents or without.
        Each process decodes every num_processes-th row; all get the same numbers."""
        rows = list(self.eval_rows)
        mine = list(
            range(self.accelerator.process_index, len(rows), self.accelerator.num_processes)
        )
        if with_plugin:
            embed = self.main_embeddings
            prompts = self.policy.mean_latent_prompts(
                embed, self.tokenizer, [rows[i] for i in mine]
            )
        else:
            prompts = [
                self.tokenizer(rows[i]["prompt"], add_special_tokens=False)["input_ids"]
                for i in mine
            ]
        outputs = self.engine.generate(
            prompts, SamplingParams(temperature=0.0, max_tokens=self.cfg.decode_max_tokens)
        )
        texts = dict(
            gather_object([(i, o.completions[0].text) for i, o in zip(mine, outputs, strict=True)])
        )
        _, correct, formatted = self._score(rows, [texts[i] for i in range(len(rows))], 1)
        return {"accuracy": correct.nanmean().item(), "format_rate": formatted.nanmean().item()}

    def _evaluate_and_keep_best(self) -> dict[str, float]:
        """Held-out accuracy now; the best plugin so far is kept in ``best_plugin/``."""
        accuracy = self.evaluate(with_plugin=True)["accuracy"]
        if self.state.best_eval is None or accuracy > self.state.best_eval:
            self.state.best_eval = accuracy
            if self.accelerator.is_main_process:
                self.policy.save_pretrained(self.run_dir / "best_plugin")
        return {"eval_accuracy": accuracy, "best_eval_accuracy": self.state.best_eval}

    # ---- checkpoints and end of run ------------------------------------------------------

    def save_parts(self, folder: Path) -> None:
        self.policy.save_pretrained(folder / "plugin")

    def load_parts(self, folder: Path) -> None:
        saved = LatentPlugin.from_pretrained(folder / "plugin", main_model=self.cfg.main_model)
        self.policy.load_state_dict(saved.state_dict())

    def cleanup(self) -> None:
        """Assert the main model is untouched, save the plugin and the curves, release the engine."""
        for name, digest in fingerprint(self._frozen_main).items():
            if digest != self.main_fingerprint[name]:
                raise RuntimeError(f"the frozen main model changed during training: {name}")
        if self.accelerator.is_main_process:
            self.policy.save_pretrained(self.run_dir / "plugin")
        if self.shared_engine is None:
            self.engine.close()
        self.reward.close()
        self.finish()


def run(cfg: DLRConfig, resume: bool = False, engine: RolloutEngine | None = None) -> int:
    """Train, evaluate before and after, print the table; ``summary.json`` in the run folder."""
    trainer = DLRTrainer(cfg, resume=resume, engine=engine)
    trainer.setup()
    results = {"frozen main model": trainer.evaluate(with_plugin=False)}
    if cfg.warm_start_steps and trainer.state.step == 0:
        trainer.warm_start()
        results["warm-started plugin"] = trainer.evaluate(with_plugin=True)
    trainer.train()
    results["RL-trained plugin"] = trainer.evaluate(with_plugin=True)
    best = trainer.state.best_eval
    trainer.cleanup()
    if not trainer.accelerator.is_main_process:
        return 0
    summary = {"steps": trainer.state.step, **results}
    if best is not None:
        summary["best evaluated plugin"] = {"accuracy": best}
    write_json(trainer.run_dir / "summary.json", summary)
    print(f"\n{len(trainer.eval_rows)} held-out problems, greedy")
    print(f"{'':<22}{'accuracy':>10}{'format':>10}")
    for name, result in results.items():
        print(f"{name:<22}{result['accuracy']:>10.1%}{result['format_rate']:>10.1%}")
    if best is not None:
        print(f"{'best evaluated plugin':<22}{best:>10.1%}  (eval_every={cfg.eval_every} steps)")
    print(reward_trend(trainer.metrics.rows()))
    print(f"plugin saved to {trainer.run_dir / 'plugin'}")
    return 0


def main(config_path: str | None, overrides: Sequence[str], resume: bool = False) -> int:
    return run(load_config(DLRConfig, config_path, overrides), resume=resume)
