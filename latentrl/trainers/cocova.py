"""CoCoVa recipe: latent visual thoughts from a Latent Q-Former, decoded by a language model.

    latentrl train cocova --config configs/cocova_shapes_tiny.yaml [key.sub=value ...] [--resume]

Each step: a batch of (image, question, answer) rows; the frozen vision encoder's tokens
(computed once per run) and the question's embeddings go through the LQ-Former, which
refines M latent thoughts for K steps with token selection; the projected thoughts fill
the language model's latent slot and the loss is

    answer_weight * CE(answer | question, thoughts)
    + infonce_weight * (InfoNCE(thoughts, image) + InfoNCE(thoughts, question text))
    + diffusion_weight * ||eps - denoiser(x_t, t, thoughts)||^2

(each auxiliary term off at weight 0). The language model is frozen (gradients reach only
its inputs) or LoRA-adapted. Evaluation decodes greedy answers through the shared rollout
engine from ``prompt_embeds``. ``plugin.architecture=llava`` trains the baseline without
latent thoughts: the visual tokens projected straight into the language model.

Under ``accelerate launch --num_processes N`` (one process per GPU; CPU processes with
gloo where there is none) each process takes a contiguous share of every step's batch
(``batch_size`` must divide by N) and of the held-out rows; the InfoNCE terms contrast
against every process's rows, so the loss, the logged numbers and the trained plugin are
those of one process with the same batch. With ``loop.gradient_accumulation_steps`` G the
step's batch is split into G micro-batches, each shared out like a whole step, and
accelerate accumulates their gradients (the InfoNCE negatives: one micro-batch's rows).
The models and each step's tensors live on accelerate's device; the precomputed visual
features stay on the CPU.

Simplified relative to the paper (which publishes no code): one LQ-Former block shared
by all K steps with one scalar gate; token selection ranks tokens by the mean attention of
all queries and heads; the diffusion target is the per-token layer-normalised visual
features (DDPM linear schedule, one timestep per example); the InfoNCE text embedding is
the mean of the question's input embeddings in the language model.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, AutoTokenizer

from latentrl.config import CoCoVaConfig, ConfigError, load_config
from latentrl.data.vqa import (
    EncodedRow,
    accuracy_table,
    encode_rows,
    evaluate_vqa,
    format_table,
    majority_answers,
    majority_table,
    mean_embedding,
    pad_ids,
    question_embeds,
)
from latentrl.io import write_json, write_jsonl
from latentrl.losses.cocova import NoiseSchedule, diffusion_loss, diffusion_noise
from latentrl.models.latent_plugin import embedding_rms
from latentrl.models.named import resolve_model
from latentrl.models.qformer import CoCoVaPlugin, CoCoVaPluginConfig, pooled
from latentrl.models.vision import VisionEncoder
from latentrl.pretrained import pretrained_tiny_vit, pretrained_vqa_language_model
from latentrl.rollout import make_engine
from latentrl.tasks import get_task
from latentrl.trainers.common import (
    EpochSampler,
    Objective,
    Recipe,
    accumulated_step,
    gather_with_grad,
    mean_over_processes,
    process_share,
)


class CoCoVaTrainer(Recipe):
    """setup() -> train() -> cleanup(); see :func:`main`."""

    name = "CoCoVa"
    curve_keys = (
        "answer_loss", "answer_accuracy", "infonce_loss", "diffusion_loss", "gate",
        "update_ratio_2", "eval_accuracy",
    )  # fmt: skip

    # ---- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        for key in ("language_model", "vision_encoder"):
            if not getattr(cfg, key):
                raise ConfigError(
                    f"missing required key {key!r} (a model folder, Hub id or 'tiny')"
                )
        self.open_run("batch_size", "rows", generators={"data": 1, "noise": 2})
        self._resolve_tiny_models()
        self.task = get_task(cfg.task.name, kind="vqa")
        self.train_rows = self.task.load("train", limit=cfg.train_examples, **cfg.task.options)
        self.eval_rows = self.task.load("test", limit=cfg.eval_problems, **cfg.task.options)
        self._load_models()
        if cfg.lm_mode == "lora":
            from peft import LoraConfig, get_peft_model

            self.lm = get_peft_model(
                self.lm,
                LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules="all-linear"),
            )
        self.uses_thoughts = cfg.plugin.architecture == "lqformer"
        # DDP over every module with trainable weights (the LoRA language model too).
        modules = {"plugin": self.plugin, **({"lm": self.lm} if cfg.lm_mode == "lora" else {})}
        self.objective = self.prepare_training(
            Objective(self._losses, **modules), self._parameter_groups()
        )
        self.schedule = NoiseSchedule(cfg.diffusion_timesteps)
        # Indices: every process draws the step's whole batch and takes its share.
        self.sampler = EpochSampler(
            range(len(self.train_rows)), self.generators["data"], self.state
        )
        self.engine = None
        self.start_or_resume()

    def _resolve_tiny_models(self) -> None:
        """``tiny`` models become their cached folders, built by the main process first."""
        cfg = self.cfg
        with self.accelerator.main_process_first():
            if cfg.vision_encoder == "tiny":
                cfg.vision_encoder = str(pretrained_tiny_vit(cfg.tiny_vit, cfg.task.options))
            if cfg.language_model == "tiny":
                cfg.language_model = str(
                    pretrained_vqa_language_model(
                        cfg.task.name,
                        cfg.task.options,
                        cfg.tiny_lm,
                        cfg.tiny_lm_pretrain,
                        thought_rate=cfg.tiny_lm_thought_rate,
                    )
                )

    def _load_models(self) -> None:
        """The frozen language model and vision encoder (whose features are computed once
        here), the plugin, and the rows encoded for the language model."""
        cfg = self.cfg
        language_model = resolve_model(cfg.language_model)
        self.tokenizer = AutoTokenizer.from_pretrained(language_model)
        # The frozen model is no prepared module: placed here (LoRA adapters follow it).
        self.lm = AutoModelForCausalLM.from_pretrained(language_model).to(self.device)
        self.lm.requires_grad_(False).eval()
        self.embed = self.lm.get_input_embeddings()

        # The encoder is frozen, so its features are computed once for the whole run.
        vision = VisionEncoder.from_pretrained(cfg.vision_encoder)
        self.train_visual, self.train_image = vision.encode_all(
            [r["image"] for r in self.train_rows]
        )
        self.eval_visual, _ = vision.encode_all([r["image"] for r in self.eval_rows])

        plugin_config = CoCoVaPluginConfig(
            language_model=str(cfg.language_model),
            vision_encoder=str(cfg.vision_encoder),
            lm_hidden_size=self.lm.config.hidden_size,
            visual_dim=vision.hidden_size,
            target_rms=embedding_rms(self.embed.weight),
            settings=cfg.plugin,
            answer_cue=cfg.answer_cue,
        )
        self.plugin = CoCoVaPlugin(plugin_config).to(self.device)
        slot = (
            cfg.plugin.num_queries
            if cfg.plugin.architecture == "lqformer"
            else self.train_visual.shape[1]
        )
        max_length = self.lm.config.max_position_embeddings
        self.train_encoded = encode_rows(
            self.tokenizer, self.train_rows, cfg.answer_cue, slot, max_length
        )
        self.eval_encoded = encode_rows(
            self.tokenizer, self.eval_rows, cfg.answer_cue, slot, max_length
        )
        self.majority = majority_answers(self.train_rows)

    def _parameter_groups(self) -> list[dict]:
        """Every trainable weight at the loop's learning rate; the gate at its own."""
        trainable = [
            p for p in [*self.plugin.parameters(), *self.lm.parameters()] if p.requires_grad
        ]
        if not self.uses_thoughts:
            return [{"params": trainable}]
        # The gate is one scalar that scales every update: its own learning rate, no decay.
        gate = self.plugin.lqformer.gate
        return [
            {"params": [p for p in trainable if p is not gate]},
            {"params": [gate], "lr": self.cfg.gate_learning_rate, "weight_decay": 0.0},
        ]

    # ---- the objective -------------------------------------------------------------------

    def _answer_loss(
        self, encoded: Sequence[EncodedRow], slots: torch.Tensor, step_tokens: int
    ) -> tuple[torch.Tensor, float]:
        """Cross-entropy of the answers given the slot vectors [B, T, H] (this process's and
        micro-batch's share of the mean over the step's ``step_tokens`` answer tokens), and
        the exact-match rate of the teacher-forced argmax over the answer tokens."""
        pad = self.tokenizer.pad_token_id
        width = slots.shape[1]
        ids, padding = pad_ids(
            [r.prefix + [pad] * width + r.suffix + r.target for r in encoded], pad
        )
        labels = ids.masked_fill(padding, -100)
        slot_mask = torch.zeros_like(padding)
        for i, row in enumerate(encoded):
            slot_mask[i, len(row.prefix) : len(row.prefix) + width] = True
            labels[i, : len(row.prefix) + width + len(row.suffix)] = -100
        ids, padding, labels, slot_mask = (
            x.to(self.device) for x in (ids, padding, labels, slot_mask)
        )
        embeds = self.embed(ids)
        # masked_scatter fills the slot positions row by row, in the order of slots' rows
        # (under mixed precision the slots come out of autocast in half precision).
        embeds = embeds.masked_scatter(slot_mask[..., None], slots.to(embeds.dtype))
        out = self.lm(inputs_embeds=embeds, attention_mask=(~padding).long(), labels=labels)
        predicted, targets = out.logits[:, :-1].argmax(-1), labels[:, 1:]
        exact = ((predicted == targets) | (targets == -100)).all(dim=1).float().mean().item()
        # Shares hold different numbers of answer tokens, DDP averages the processes'
        # gradients and accelerate the micro-batches': scaled so that the result is the mean
        # over all the step's answer tokens, exactly, however they fall into the shares.
        tokens = (targets != -100).sum().item()
        parts = self.accelerator.num_processes * self.accelerator.gradient_accumulation_steps
        return out.loss * (tokens * parts / step_tokens), exact

    def _losses(
        self, picks: list[int], noise: tuple[torch.Tensor, torch.Tensor] | None, step_tokens: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on this process's rows ``picks`` of a micro-batch (``noise``: their
        diffusion timesteps and noise; ``step_tokens``: the answer tokens of the step's whole
        batch); called through DDP as :class:`Objective`'s forward."""
        cfg = self.cfg
        encoded = [self.train_encoded[i] for i in picks]
        # The visual features stay on the CPU for the whole run; a batch's rows move.
        visual = self.train_visual[picks].to(self.device)
        text, pad = question_embeds(self.embed, encoded, self.tokenizer.pad_token_id)
        out = self.plugin(visual, text, pad)
        answer_loss, exact = self._answer_loss(encoded, out.embeds, step_tokens)
        loss = cfg.answer_weight * answer_loss
        stats = {"answer_loss": answer_loss.item(), "answer_accuracy": exact}
        if self.uses_thoughts:
            # Step k's update relative to z_{k-1}: step 1 moves off the shared queries, the
            # later steps refine image-dependent thoughts (near 0: the iterations do nothing).
            stats |= {f"update_ratio_{k}": size for k, size in enumerate(out.update_sizes, 1)}
        if self.uses_thoughts and cfg.infonce_weight > 0:
            # In-batch negatives from every process's rows of the micro-batch, as in one
            # process.
            pooled_latents, image, question = (
                gather_with_grad(self.accelerator, x)
                for x in (
                    pooled(out.latents),
                    self.train_image[picks].to(self.device),
                    mean_embedding(text, pad),
                )
            )
            contrast, contrast_stats = self.plugin.contrast(pooled_latents, image, question)
            loss = loss + cfg.infonce_weight * contrast
            stats |= {"infonce_loss": contrast.item(), **contrast_stats}
        if noise is not None:
            # Unit-scale targets per token, the scale DDPM's schedule assumes.
            x0 = F.layer_norm(visual, visual.shape[-1:])
            reconstruction = diffusion_loss(
                self.plugin.denoiser, x0, out.latents, self.schedule, noise=noise
            )
            loss = loss + cfg.diffusion_weight * reconstruction
            stats["diffusion_loss"] = reconstruction.item()
        stats["loss"] = loss.item()
        return loss, stats

    def _step(self) -> dict[str, float]:
        """One optimiser step, accumulated by accelerate over ``loop.gradient_accumulation_steps``
        equal micro-batches of the step's rows, each shared out over the processes."""
        cfg = self.cfg
        picks = self.sampler.draw(self.cfg.batch_size)
        step_tokens = sum(len(self.train_encoded[i].target) for i in picks)
        noise = None
        if self.uses_thoughts and cfg.diffusion_weight > 0:
            # Drawn for the whole batch on every process: the random stream does not
            # depend on the number of processes or micro-batches.
            shape = (len(picks), *self.train_visual.shape[1:])
            noise = diffusion_noise(self.schedule, shape, self.generators["noise"])  # on the CPU
        size = len(picks) // cfg.loop.gradient_accumulation_steps
        share = process_share(self.accelerator, size)
        micro_batches = []
        for start in range(0, len(picks), size):
            mine = slice(start + share.start, start + share.stop)
            my_noise = None if noise is None else tuple(x[mine].to(self.device) for x in noise)
            micro_batches.append(partial(self.objective, picks[mine], my_noise, step_tokens))
        self.plugin.train()
        # Equal micro-batches: their mean is the batch's (the answer loss is pre-scaled).
        stats = accumulated_step(
            self.accelerator, self.objective, self.optimizer, cfg.loop.max_grad_norm,
            micro_batches,
        )  # fmt: skip
        self.scheduler.step()
        if self.uses_thoughts:
            stats["gate"] = math.tanh(self.plugin.lqformer.gate.item())
        return mean_over_processes(self.accelerator, stats)

    def train(self) -> None:
        cfg, state = self.cfg, self.state
        bar = self.progress_bar()
        while state.step < cfg.loop.steps and not (
            cfg.time_budget_s and state.elapsed_s >= cfg.time_budget_s
        ):
            started = time.perf_counter()
            metrics = self._step()
            # The slowest process's time: all processes stop at the same step.
            seconds = torch.tensor(
                [time.perf_counter() - started], dtype=torch.float64, device=self.device
            )
            state.elapsed_s += self.accelerator.gather(seconds).max().item()
            state.step += 1
            metrics |= {"lr": self.scheduler.get_last_lr()[0], "elapsed_s": state.elapsed_s}
            if cfg.eval_every and state.step % cfg.eval_every == 0:
                metrics["eval_accuracy"] = self.evaluate()[0]["accuracy"]
            self.end_step(
                bar, metrics, loss=f"{metrics['answer_loss']:.3f}",
                acc=f"{metrics['answer_accuracy']:.3f}",
            )  # fmt: skip
        bar.close()

    # ---- evaluation ----------------------------------------------------------------------

    def _decoding_model(self) -> str:
        """The folder the rollout engine decodes: the language model, LoRA merged in
        (written by the main process)."""
        if self.cfg.lm_mode == "frozen":
            return str(self.cfg.language_model)
        folder = self.run_dir / "language_model"
        with self.accelerator.main_process_first():
            if self.accelerator.is_main_process:
                merged = copy.deepcopy(self.lm).merge_and_unload()
                merged.save_pretrained(folder)
                self.tokenizer.save_pretrained(folder)
        return str(folder)

    def evaluate(self, with_plugin: bool = True) -> tuple[dict[str, float], list[dict]]:
        """Greedy answers on the held-out rows through the rollout engine; without the
        plugin the latent slot is empty (the language model sees the question only).
        Each process answers a contiguous share of the rows; all get the whole result."""
        if self.engine is None:
            self.engine = make_engine(self._decoding_model(), self.cfg.rollout)
        elif self.cfg.lm_mode == "lora":  # the adapter moved since: the engine decodes its merge
            self.engine.update_weights(copy.deepcopy(self.lm).merge_and_unload())
        self.plugin.eval()
        mine = process_share(self.accelerator, len(self.eval_rows))
        result, samples = evaluate_vqa(
            self.engine, self.tokenizer, self.embed, self.plugin if with_plugin else None,
            self.eval_rows[mine], self.eval_encoded[mine], self.eval_visual[mine],
            self.cfg.decode_max_tokens,
        )  # fmt: skip
        if self.accelerator.num_processes == 1:
            return result, samples
        samples = gather_object(samples)  # in process order: the rows' order
        result = accuracy_table(samples, [sample["correct"] for sample in samples])
        result["mean_iterations"] = sum(s["iterations"] for s in samples) / len(samples)
        return result, samples

    # ---- checkpoints ---------------------------------------------------------------------

    def save_parts(self, folder: Path) -> None:
        self.plugin.save_pretrained(folder / "plugin")
        lora = {k: v for k, v in self.lm.state_dict().items() if "lora_" in k}
        torch.save(lora, folder / "lora.pt")

    def load_parts(self, folder: Path) -> None:
        self.plugin.load_state_dict(CoCoVaPlugin.from_pretrained(folder / "plugin").state_dict())
        lora = torch.load(folder / "lora.pt", map_location=self.device)
        if lora:
            self.lm.load_state_dict(lora, strict=False)

    # ---- end of run ----------------------------------------------------------------------

    def cleanup(self) -> None:
        """Save the plugin (and the merged language model under LoRA) and the curves."""
        plugin_dir = self.run_dir / "plugin"
        if self.cfg.lm_mode == "lora":
            self.plugin.config.language_model = self._decoding_model()
        self.plugin.config.extra = {
            "steps": self.state.step,
            "train_seconds": round(self.state.elapsed_s, 1),
        }
        if self.accelerator.is_main_process:
            self.plugin.save_pretrained(plugin_dir)
        if self.engine is not None:
            self.engine.close()
        self.finish()


def main(config_path: str | None, overrides: Sequence[str], resume: bool = False) -> int:
    cfg = load_config(CoCoVaConfig, config_path, overrides)
    trainer = CoCoVaTrainer(cfg, resume=resume)
    trainer.setup()
    question_only, _ = trainer.evaluate(with_plugin=False)
    trainer.train()
    result, samples = trainer.evaluate()
    trainer.cleanup()
    if not trainer.accelerator.is_main_process:
        return 0
    baseline = majority_table(trainer.eval_rows, trainer.majority)
    baseline |= {
        f"question_only_{k}": v for k, v in question_only.items() if k.startswith("accuracy")
    }
    summary = {
        "architecture": cfg.plugin.architecture,
        "steps": trainer.state.step,
        "train_seconds": round(trainer.state.elapsed_s, 1),
        **result,
        **baseline,
        "config": asdict(cfg),
    }
    write_json(trainer.run_dir / "summary.json", summary)
    write_jsonl(trainer.run_dir / "samples.jsonl", samples)
    print(
        f"\nCoCoVa ({cfg.plugin.architecture}), {trainer.state.step} steps in {trainer.state.elapsed_s:.0f} s"
    )
    print(format_table(result, baseline))
    print(f"plugin saved to {trainer.run_dir / 'plugin'}")
    return 0
