"""The `cwhawq` command: `search` trains the agent on a model, `apply` reuses a saved policy on another,
`distill` clones the results of several runs into one policy, `baseline` runs a baseline method (uniform,
HAWQ-V2, ILPs, greedy, random search) on the same problem, `plot` draws a finished run's channel bits.

`scripts/train_agent.py`, `scripts/apply_policy.py` and `scripts/distill_policy.py` are the same as
`cwhawq search`, `cwhawq apply` and `cwhawq distill`.

Every user-facing failure is a `CwhawqError`, printed as one line (``error: ...``) with exit status 2; warnings
are printed as one line too (``warning: ...``). Ctrl-C ends with status 130; an interrupted search writes its
result first.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cwhawq.errors import CwhawqError
from cwhawq.settings import (
    CHANNEL_ORDERS,
    DEFAULT_BIT_WIDTHS,
    DEFAULT_EPISODES,
    NOISE_LAYER_LAWS,
    OBJECTIVES,
    PROBE_DATA,
    AgentSettings,
    ProblemSettings,
    SearchSettings,
    TraceSettings,
)

OBSERVATION_HELP = (
    "'v1' (default): each layer's shape, size and trace statistics; 'v2': also the level the greedy and the "
    "layer ILP give each layer (a policy meant for reuse on other models)"
)


def _pin(text: str) -> tuple[str, int]:
    pattern, _, bits = text.rpartition("=")
    if not pattern or not bits.isdigit():
        raise argparse.ArgumentTypeError(f"--pin takes PATTERN=BITS (e.g. 'fc*=8'), not {text!r}")
    return pattern, int(bits)


def add_problem_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments that define the quantization problem (shared by every subcommand)."""
    group = parser.add_argument_group("problem")
    group.add_argument("--model", default="digits_cnn", help="built-in name or 'package.module:function'")
    group.add_argument("--checkpoint", help="state_dict (or whole-module) file to load into the model")
    group.add_argument(
        "--dataset",
        help="digits, mnist, mnist1d, or your .npz/.pt file with arrays x and y, or x_train ... y_test (default: the "
        "built-in model's own)",
    )
    budget = group.add_mutually_exclusive_group()
    budget.add_argument("--budget-bits", type=float, help="size budget as average bits per weight (default 2.5)")
    budget.add_argument("--budget-mb", type=float, help="size budget in megabytes (10^6 bytes) of weights")
    group.add_argument("--bits", type=int, nargs="+", default=list(DEFAULT_BIT_WIDTHS), help="candidate bit-widths")
    group.add_argument("--pin", type=_pin, action="append", default=[], help="PATTERN=BITS, e.g. 'conv1=8'")
    group.add_argument("--no-fold-bn", action="store_true", help="quantize convolutions without folding BatchNorm")
    add_search_rule_arguments(group)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--cache-dir", help="where trained built-ins and traces are cached ($CWHAWQ_CACHE)")
    add_trace_arguments(group)
    group.add_argument("--trace-batches", type=int, default=TraceSettings.num_batches, help="training batches")
    group.add_argument(
        "--device",
        default=ProblemSettings.device,
        help="torch device for the model's passes (traces, evaluations): cpu, cuda, cuda:N or mps; the agent's small "
        f"networks stay on the CPU (default {ProblemSettings.device!r})",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: a search runs thousands of small forward passes, where more threads "
        "mostly add synchronisation; raise it for large models)",
    )


def add_search_rule_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--objective`, `--channel-order` and `--kl-train-samples` (`ProblemSettings`): how a search measures and
    places, shared by the commands and the benchmark."""
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=ProblemSettings.objective,
        help="what makes an assignment better on validation: 'accuracy', or 'kl', the KL divergence of its "
        f"predictions from the full-precision model's (default {ProblemSettings.objective!r})",
    )
    parser.add_argument(
        "--channel-order",
        choices=CHANNEL_ORDERS,
        default=ProblemSettings.channel_order,
        help="which channels of a layer a search gives the higher widths: by Hessian 'trace', or by the "
        f"'perturbation' their quantization adds (default {ProblemSettings.channel_order!r})",
    )
    parser.add_argument(
        "--kl-train-samples",
        type=int,
        default=ProblemSettings.kl_train_samples,
        help="training inputs (labels unused) that join the validation inputs for the 'kl' objective; 0: validation "
        f"alone (default {ProblemSettings.kl_train_samples})",
    )


def add_trace_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--trace-probes` and `--trace-reliability` (`TraceSettings`), shared by the commands and the benchmark."""
    parser.add_argument(
        "--trace-probes", type=int, default=TraceSettings.max_probes, help="most Hutchinson probes per trace estimate"
    )
    parser.add_argument(
        "--trace-reliability",
        type=float,
        default=TraceSettings.reliability,
        help="probe until every layer's channel trace order is this share signal, not probe noise (0: whole-model "
        f"rule only; default {TraceSettings.reliability})",
    )
    parser.add_argument(
        "--trace-probe-data",
        choices=PROBE_DATA,
        default=TraceSettings.probe_data,
        help="what one probe runs over: 'all' trace batches, or one 'batch' in turn (1/--trace-batches the cost per "
        "probe; pass that many times more --trace-probes)",
    )


def add_noise_layer_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--noise-layers` and `--noise-layers-law` (`AgentSettings`), shared by `search` and the benchmark scripts."""
    parser.add_argument(
        "--noise-layers",
        type=int,
        default=AgentSettings.noise_layers,
        help="layers per episode whose action gets exploration noise, chosen at random (0: every layer, as HAQ)",
    )
    parser.add_argument(
        "--noise-layers-law",
        default=AgentSettings.noise_layers_law,
        choices=list(NOISE_LAYER_LAWS),
        help=f"'fixed': --noise-layers layers every episode; 'geometric': a number drawn per episode with "
        f"--noise-layers as its mean (default {AgentSettings.noise_layers_law!r})",
    )


def add_schedule_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, length: str) -> None:
    """`--warmup-episodes` and `--noise-decay`, by default `AgentSettings.schedule_for` the run's length (`length`
    names the option that sets it), shared by `search`, `apply` and `scripts/benchmark.py`."""
    parser.add_argument(
        "--warmup-episodes",
        type=int,
        help=f"episodes before the first update (default: the same share of {length} as "
        f"{AgentSettings.warmup_episodes} of {DEFAULT_EPISODES})",
    )
    parser.add_argument(
        "--noise-decay",
        type=float,
        help=f"per-episode decay of the exploration noise after warm-up (default: the rate that ends {length} "
        f"with the noise {DEFAULT_EPISODES} episodes at {AgentSettings.noise_decay} end with)",
    )


def add_exploration_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--noise-sigma` and the schedule arguments (`add_schedule_arguments`) of a search of `--episodes`, shared by
    `search` and `scripts/benchmark.py`."""
    add_schedule_arguments(parser, "--episodes")
    parser.add_argument(
        "--noise-sigma",
        type=float,
        default=AgentSettings.noise_sigma,
        help=f"exploration noise (default {AgentSettings.noise_sigma})",
    )


def exploration_schedule(
    agent: AgentSettings, episodes: int, args: argparse.Namespace, out: str | Path
) -> AgentSettings:
    """`agent` on the exploration schedule of a run of `episodes` episodes (`AgentSettings.schedule_for`), with
    `--warmup-episodes` and `--noise-decay` where given. With `--resume`, what is not given is what the run in `out`
    started on, so that a search resumed for more episodes goes on with its schedule."""
    from agents.search import recorded_agent_settings

    warmup, decay = args.warmup_episodes, args.noise_decay
    if args.resume:
        recorded = recorded_agent_settings(Path(out))
        warmup = recorded.get("warmup_episodes") if warmup is None else warmup
        decay = recorded.get("noise_decay") if decay is None else decay
    return agent.schedule_for(episodes, warmup, decay)


def add_anchor_steps_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--anchor-steps` (`AgentSettings.anchor_steps`), shared by `search`, `apply` and the benchmark scripts."""
    parser.add_argument(
        "--anchor-steps",
        type=int,
        default=AgentSettings.anchor_steps,
        help=f"regression steps after every update that pull the actor back toward the best episode cloned into it "
        f"(0: none; default {AgentSettings.anchor_steps})",
    )


def search_agent_settings(args: argparse.Namespace, **extra: Any) -> AgentSettings:
    """`AgentSettings` from the agent options that `search` and `scripts/benchmark.py` share, the schedule left at
    its default (`exploration_schedule` sets it); `extra` sets other fields."""
    return AgentSettings(
        noise_sigma=args.noise_sigma,
        noise_layers=args.noise_layers,
        noise_layers_law=args.noise_layers_law,
        warm_start=None if args.warm_start == "none" else args.warm_start,
        action=args.action,
        observation=args.observation,
        imitate_best=args.imitate_best,
        anchor_steps=args.anchor_steps,
        coarse_share=args.coarse_share,
        **extra,
    )


def problem_settings(args: argparse.Namespace) -> ProblemSettings:
    """Build `ProblemSettings` from parsed arguments."""
    budget_bits = args.budget_bits if args.budget_bits is not None or args.budget_mb is not None else 2.5
    return ProblemSettings(
        model=args.model,
        dataset=args.dataset,
        checkpoint=args.checkpoint,
        budget_bits=budget_bits,
        budget_mb=args.budget_mb,
        bit_widths=tuple(sorted(set(args.bits))),
        pin=dict(args.pin),
        fold_bn=not args.no_fold_bn,
        seed=args.seed,
        cache_dir=args.cache_dir,
        traces=TraceSettings(
            max_probes=args.trace_probes,
            num_batches=args.trace_batches,
            reliability=args.trace_reliability,
            probe_data=args.trace_probe_data,
        ),
        objective=args.objective,
        channel_order=args.channel_order,
        kl_train_samples=args.kl_train_samples,
        device=args.device,
    )


def _default_out(problem: ProblemSettings, prefix: str) -> str:
    budget = f"{problem.budget_bits}b" if problem.budget_bits is not None else f"{problem.budget_mb}MB"
    name = problem.model.replace(":", "_").replace(".", "_")
    return f"runs/{prefix}_{name}_{budget}_s{problem.seed}"


def _search(args: argparse.Namespace) -> None:
    from agents.search import SearchRun, check_out_dir, check_settings
    from cwhawq.export import PACKED_WEIGHTS_FILE, QUANTIZED_MODEL_FILE
    from cwhawq.problem import build_problem
    from cwhawq.result import format_summary

    problem_cfg = problem_settings(args)
    out = args.out or _default_out(problem_cfg, "search")
    settings = SearchSettings(
        problem=problem_cfg,
        agent=exploration_schedule(search_agent_settings(args), args.episodes, args, out),
        episodes=args.episodes,
        seed=args.seed,
        out=out,
        resume=args.resume,
        progress=not args.quiet,
    )
    check_settings(settings)
    check_out_dir(settings, coarse=settings.agent.coarse_share > 0)
    problem = build_problem(problem_cfg, progress=settings.progress)
    hint = "rerun with --resume to continue"
    with _hint_if_interrupted(hint):
        result = SearchRun(problem, settings).run()
    print(format_summary(result))
    print(
        f"wrote {settings.out_dir / 'result.json'}, {QUANTIZED_MODEL_FILE} and {PACKED_WEIGHTS_FILE}; "
        f"curves: tensorboard --logdir {settings.out_dir}"
    )
    _exit_if_interrupted(result, hint)


@contextmanager
def _hint_if_interrupted(hint: str) -> Iterator[None]:
    """Ctrl-C before a search's first checkpoint (in its warm start): say how to continue, then stop (130)."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"interrupted before the first checkpoint; the evaluations so far are kept: {hint}", file=sys.stderr)
        raise


def _exit_if_interrupted(result: dict, hint: str) -> None:
    """An interrupted search has written its best result; still end with the interrupted status (130)."""
    if result.get("search", {}).get("interrupted"):
        print(f"search interrupted; result.json holds the best assignment found so far: {hint}", file=sys.stderr)
        raise KeyboardInterrupt


def _apply(args: argparse.Namespace) -> None:
    from agents.policy_bundle import load_bundle, read_metadata
    from agents.rollout import ZERO_SHOT_OUTCOMES, best_outcome, reuse_outcomes
    from agents.search import SearchRun, check_out_dir, check_settings
    from cwhawq.export import PACKED_WEIGHTS_FILE, QUANTIZED_MODEL_FILE
    from cwhawq.problem import build_problem
    from cwhawq.result import build_result, format_summary, write_result
    from envs.channel_bits_env import ChannelBitsEnv

    if args.finetune_episodes < 0:
        raise CwhawqError(f"--finetune-episodes must be 0 (zero-shot) or more, not {args.finetune_episodes}")
    if args.resume and args.finetune_episodes <= 0:
        raise CwhawqError("--resume continues a fine-tune; pass its --finetune-episodes too")
    if args.finetune_episodes <= 0 and (args.warmup_episodes is not None or args.noise_decay is not None):
        raise CwhawqError("--warmup-episodes and --noise-decay set a fine-tune's schedule; pass --finetune-episodes N")
    problem_cfg = problem_settings(args)
    # The environment takes the policy's own action and observation; other mismatches are refused on load.
    metadata = read_metadata(args.policy)
    agent = AgentSettings(
        action=metadata.get("action", AgentSettings.action),
        observation=metadata.get("observation_version", AgentSettings.observation),
        anchor_steps=args.anchor_steps,
    )
    out = args.out or _default_out(problem_cfg, "apply")
    if args.finetune_episodes > 0:
        agent = exploration_schedule(agent, args.finetune_episodes, args, out)
    settings = SearchSettings(
        problem=problem_cfg,
        agent=agent,
        episodes=args.finetune_episodes,
        seed=args.seed,
        out=out,
        resume=args.resume,
        progress=not args.quiet,
    )
    if args.finetune_episodes > 0:
        check_settings(settings)
        check_out_dir(settings, fine_tune=True)
    elif (settings.out_dir / "result.json").exists():
        raise CwhawqError(f"{settings.out_dir} already holds a result; pass another --out")
    problem = build_problem(problem_cfg, progress=settings.progress)
    hint = "rerun the same command with --resume to continue"
    if args.finetune_episodes > 0:
        with _hint_if_interrupted(hint):
            result = SearchRun(problem, settings, start_from=args.policy).run()
    else:
        env = ChannelBitsEnv.for_agent(problem, agent)
        model, metadata = load_bundle(args.policy, env)
        outcomes = reuse_outcomes(model, env)
        result = build_result(
            problem,
            best_outcome(outcomes)[0]["assignment"],
            "policy-zero-shot",
            settings.to_dict(),
            extra={
                "policy": {"path": str(args.policy), "trained_on": metadata["trained_on"]},
                "zero_shot": {
                    "evaluations": len(outcomes),
                    **{
                        key: {name: info[key] for name, (info, _) in zip(ZERO_SHOT_OUTCOMES, outcomes)}
                        for key in ("val_accuracy", "val_score")
                    },
                },
            },
        )
        write_result(settings.out_dir, problem, result)
    print(format_summary(result))
    print(f"wrote {settings.out_dir / 'result.json'}, {QUANTIZED_MODEL_FILE} and {PACKED_WEIGHTS_FILE}")
    _exit_if_interrupted(result, hint)


def _distill(args: argparse.Namespace) -> None:
    from agents.distill import distill_runs

    out = Path(args.out)
    actor_arch = () if args.linear_actor else None
    agent = AgentSettings(action=args.action, observation=args.observation, actor_arch=actor_arch)
    trained_on = distill_runs(
        args.runs, out, agent, args.seed, args.cache_dir, progress=not args.quiet, device=args.device
    )
    models = sorted({source["model"] for source in trained_on["distilled_from"]})
    print(
        f"distilled {len(args.runs)} runs ({trained_on['layers']} layer steps; models: {', '.join(models)}) "
        f"into {out / 'policy.zip'}; fit error {trained_on['fit_mse']:.4f} (mean squared, in action units)"
    )
    print(f"use it: cwhawq apply --policy {out / 'policy.zip'} --model ... --budget-bits ...")


def _baseline(args: argparse.Namespace) -> None:
    from agents.random_search import random_search
    from cwhawq.baselines import run_method
    from cwhawq.evaluation_memo import EVALUATIONS_FILE, EvaluationMemo
    from cwhawq.export import PACKED_WEIGHTS_FILE, QUANTIZED_MODEL_FILE
    from cwhawq.problem import build_problem
    from cwhawq.result import build_result, format_summary, write_result

    problem_cfg = problem_settings(args)
    out = Path(args.out or _default_out(problem_cfg, args.method))
    problem = build_problem(problem_cfg, progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    extra = {}
    if args.method == "random":
        memo = EvaluationMemo(out / EVALUATIONS_FILE, problem.fingerprint())
        try:
            with problem.memoized(memo):
                record = random_search(problem, args.evaluations, args.seed, progress=not args.quiet)
        except KeyboardInterrupt:
            print(
                f"random search interrupted after {len(memo)} distinct evaluations, kept in {memo.path}: "
                "rerun the same command to continue",
                file=sys.stderr,
            )
            raise
        assignment = record.best_assignment
        extra = {"search": {"evaluations": args.evaluations, "best_val_score_curve": record.best_so_far()}}
    else:
        assignment = run_method(problem, args.method)
    settings = {"problem": asdict(problem_cfg), "method": args.method, "evaluations": args.evaluations}
    result = build_result(problem, assignment, args.method, settings, extra=extra)
    write_result(out, problem, result)
    print(format_summary(result))
    print(f"wrote {out / 'result.json'}, {QUANTIZED_MODEL_FILE} and {PACKED_WEIGHTS_FILE}")


def _plot(args: argparse.Namespace) -> None:
    from cwhawq.report import FIGURE_FILE, save_channel_bits_figure
    from cwhawq.result import read_result

    result_path, result = read_result(args.run)
    figure = Path(args.figure) if args.figure else result_path.parent / FIGURE_FILE
    save_channel_bits_figure(result, figure)
    print(f"wrote {figure}")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with its subcommands."""
    from cwhawq.baselines import DETERMINISTIC_METHODS
    from envs.channel_bits_env import ACTIONS
    from envs.observation import OBSERVATION_VERSIONS

    parser = argparse.ArgumentParser(prog="cwhawq", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="train the DDPG agent to find channel bit-widths")
    add_problem_arguments(search)
    group = search.add_argument_group("search")
    group.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    add_exploration_arguments(group)
    add_noise_layer_arguments(group)
    group.add_argument(
        "--warm-start",
        default=AgentSettings.warm_start,
        choices=["best", *DETERMINISTIC_METHODS, "none"],
        help="'best' (default): start from the best baseline on validation; a baseline name: start from it; "
        "'none': HAQ's random warm-up",
    )
    group.add_argument(
        "--action",
        default=AgentSettings.action,
        choices=list(ACTIONS),
        help="'level' (default): one fractional bit-width level per layer, split over two neighbouring widths; "
        "'shares': one share of the layer's channels per candidate bit-width",
    )
    group.add_argument(
        "--observation", default=AgentSettings.observation, choices=list(OBSERVATION_VERSIONS), help=OBSERVATION_HELP
    )
    group.add_argument(
        "--imitate-best",
        action=argparse.BooleanOptionalAction,
        default=AgentSettings.imitate_best,
        help="clone every new best episode into the actor, so that exploration follows the best found (default)",
    )
    add_anchor_steps_argument(group)
    group.add_argument(
        "--coarse-share",
        type=float,
        default=AgentSettings.coarse_share,
        help="share of the episodes spent on a layer-wise search first, whose best starts the channel-wise search",
    )
    group.add_argument("--out", help="output directory (default runs/search_<model>_<budget>_s<seed>)")
    group.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    search.set_defaults(handler=_search)

    apply = commands.add_parser("apply", help="run a saved policy on a model, zero-shot or fine-tuned")
    apply.add_argument("--policy", required=True, help="policy.zip written by a search")
    add_problem_arguments(apply)
    group = apply.add_argument_group("apply")
    group.add_argument("--finetune-episodes", type=int, default=0, help="continue training for N episodes")
    add_schedule_arguments(group, "N (--finetune-episodes)")
    add_anchor_steps_argument(group)
    group.add_argument("--out", help="output directory (default runs/apply_<model>_<budget>_s<seed>)")
    group.add_argument("--resume", action="store_true", help="continue the fine-tune saved in --out")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    apply.set_defaults(handler=_apply)

    distill = commands.add_parser(
        "distill", help="clone the best assignments of several finished runs into one policy (multi-source)"
    )
    distill.add_argument("runs", nargs="+", type=Path, help="output directories (or result.json files) of runs")
    distill.add_argument("--out", required=True, help="directory for the distilled policy.zip")
    distill.add_argument("--action", default=AgentSettings.action, choices=list(ACTIONS), help="channel action")
    distill.add_argument(
        "--observation", default=AgentSettings.observation, choices=list(OBSERVATION_VERSIONS), help=OBSERVATION_HELP
    )
    distill.add_argument(
        "--linear-actor",
        action="store_true",
        help="fit a linear actor (tanh of a linear function of the observation, a least-squares fit shrunk toward "
        "the channel greedy's level) instead of the MLP",
    )
    distill.add_argument("--seed", type=int, default=0, help="seeds the actor's initialisation")
    distill.add_argument("--cache-dir", help="cache of built-in models and traces (default: what each run used)")
    distill.add_argument(
        "--device",
        default=ProblemSettings.device,
        help="torch device on which the runs' problems are rebuilt (replaces the one each run recorded)",
    )
    distill.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    distill.add_argument("--quiet", action="store_true", help="no progress bars")
    distill.set_defaults(handler=_distill)

    baseline = commands.add_parser("baseline", help="run a baseline method on the same problem and cost model")
    add_problem_arguments(baseline)
    group = baseline.add_argument_group("baseline")
    group.add_argument("--method", required=True, choices=[*DETERMINISTIC_METHODS, "random"])
    group.add_argument("--evaluations", type=int, default=300, help="quantized evaluations (random search)")
    group.add_argument("--out", help="output directory (default runs/<method>_<model>_<budget>_s<seed>)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    baseline.set_defaults(handler=_baseline)

    plot = commands.add_parser("plot", help="draw a run's channel bits against their Hessian traces (PNG)")
    plot.add_argument("run", type=Path, help="output directory (or result.json) of a finished run")
    plot.add_argument("--figure", help="PNG file to write (default channel_bits.png beside result.json)")
    plot.set_defaults(handler=_plot, threads=1)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    """Format a warning as the errors are: the user needs the message, not the library line that raised it."""
    return f"warning: {message}\n"


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    original = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        yield
    finally:
        warnings.formatwarning = original


def _check_common_arguments(args: argparse.Namespace) -> None:
    """Refuse --threads and --out values that every command would otherwise fail on late, with a traceback."""
    if args.threads < 1:
        raise CwhawqError(f"--threads must be at least 1, not {args.threads}")
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise CwhawqError(f"--out {out} is a file; pass a directory (it is created if missing)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    import torch

    try:
        _check_common_arguments(args)
        torch.set_num_threads(args.threads)
        with _one_line_warnings():
            handler(args)
    except CwhawqError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print("; ".join(["interrupted", *getattr(interrupt, "__notes__", [])]), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
