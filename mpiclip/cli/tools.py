"""`mpiclip stepsize | privacy`: constants, step sizes and privacy budgets without running."""

from __future__ import annotations

import sys

RELATIONS = ("replace", "add_remove", "add_remove_record")  # privacy.RELATIONS (not imported: dp-accounting is optional)


def add_parsers(sub) -> None:
    steps = sub.add_parser("stepsize", help="print L, L̃, μ and the theoretical step sizes of a config",
                           description="Load a config's data in this one process and print its smoothness "
                           "constants and, for each k (or the config's compressor), α or ω and the step size of "
                           "every rule that applies (without the config's factor). Nothing is run or written.")
    steps.add_argument("config", metavar="CONFIG")
    steps.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    steps.add_argument("--k", type=int, nargs="+", help="values of compressor.k to tabulate (e.g. 1 2 4 8)")
    steps.set_defaults(func=cmd_stepsize)

    priv = sub.add_parser("privacy", help="ε of a noise level, or the noise level for an (ε, δ) target",
                          description="Privacy of the DP clipping methods: each round every worker sends a clipped "
                          "message plus N(0, σ² I), a Gaussian mechanism of sensitivity 2τ (replace one record, or "
                          "add/remove one record), τ (add/remove a worker; add/remove one record for DP-SGD's sum: "
                          "--per-example) composed over the rounds by dp-accounting (Rényi DP, or the privacy loss "
                          "distribution with --accountant pld). Give "
                          "--sigma for ε, or --epsilon for the σ that uses exactly that budget.")
    priv.add_argument("--tau", type=float, required=True, help="clipping threshold τ")
    priv.add_argument("--rounds", type=int, required=True, help="number of rounds (messages per worker)")
    priv.add_argument("--delta", type=float, default=1e-5, help="δ (default 1e-5)")
    group = priv.add_mutually_exclusive_group(required=True)
    group.add_argument("--sigma", type=float, help="noise standard deviation: print ε")
    group.add_argument("--epsilon", type=float, help="privacy target: print σ")
    priv.add_argument("--relation", choices=RELATIONS, default="replace",
                      help="neighbouring datasets: replace one record (default), add_remove_record (one record) or "
                      "add_remove (a whole worker)")
    priv.add_argument("--accountant", choices=("rdp", "pld"), default="rdp",
                      help="'rdp' (Rényi DP, default) or 'pld' (privacy loss distribution, tight; not with fixed-size "
                      "minibatches)")
    priv.add_argument("--records", type=int, help="samples per worker, for minibatch methods")
    priv.add_argument("--batch", type=int, help="minibatch size per worker (sampled without replacement; with "
                      "--sampling poisson the expected size: q = batch/records)")
    priv.add_argument("--sampling", choices=("fixed", "poisson"), default="fixed",
                      help="fixed-size minibatches (default; accounted under replace) or Poisson sampling "
                      "(under add_remove_record)")
    priv.add_argument("--per-example", action="store_true",
                      help="DP-SGD: the noise is on a sum of per-example clipped terms, which adding or removing "
                      "one record moves by τ, not 2τ (add_remove_record only)")
    priv.set_defaults(func=cmd_privacy)


def cmd_stepsize(args) -> int:
    from mpiclip import config as cfg
    from mpiclip import report, stepsize
    from mpiclip.comm import SerialComm
    from mpiclip.compressors import COMPRESSORS
    from mpiclip.errors import InputError, MpiclipError
    from mpiclip.session import Session

    try:
        # every rule is tabulated below, so the config's own rule need not fit its compressor
        config = cfg.load(args.config, args.overrides + ['stepsize={rule = "inverse_L"}'])[0]
        name, params = config.compressor.name, config.compressor.params
        if args.k and not hasattr(params, "k"):
            raise InputError("--k", args.k, f"compressor {name!r} has no k")
        run = Session(config, SerialComm(), log=lambda *a: None)
        run.prepare(check_output=False)
        run.build(with_trace=False)
        s, n, d = run.smooth, config.run.n_workers, run.d
        print(f"{run.plan.summary.description if run.plan else config.problem.name}: n = {n} workers, d = {d}")
        print(f"L = {s.L:.10g}   L̃ = {s.L_tilde:.10g}   max L_i = {s.L_workers.max():.10g}   "
              f"μ = {s.mu if s.mu is not None else '-'}")
        ks = args.k or [getattr(params, "k", None)]
        rows = []
        for k in ks:
            compressor = COMPRESSORS.get(name, "compressor.name").build(type(params)(**{**vars(params), "k": k}) if k else params)
            compressor.validate(d)
            c = stepsize.Constants(s.L, s.L_tilde, s.mu, compressor.alpha(d), compressor.omega(d), n)
            gammas = []
            for rule in ("ef21", "ef21_pl", "diana", "inverse_L"):
                try:
                    gammas.append(f"{stepsize.RULES[rule](c, config.stepsize):.6g}")
                except InputError:
                    gammas.append("-")
            rows.append([f"{name}" + (f" k={k}" if k else ""), _num(c.alpha), _num(c.omega), *gammas])
        print()
        print(report.table(rows, ["compressor", "α", "ω", "ef21", "ef21_pl", "diana", "inverse_L"]))
        print(f"\nthe method's default rule: {run.method_cls.default_rule}; a run uses γ = stepsize.factor × rule")
        return 0
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return e.exit_code


def _num(v) -> str:
    return "-" if v is None else f"{v:.6g}"


def cmd_privacy(args) -> int:
    from mpiclip import privacy
    from mpiclip.errors import InputError, MpiclipError

    try:
        checks = [("--tau", args.tau, args.tau > 0, "must be > 0"), ("--rounds", args.rounds, args.rounds >= 1, "must be >= 1"),
                  ("--delta", args.delta, 0 < args.delta < 1, "must be in (0, 1)"),
                  ("--sigma", args.sigma, args.sigma is None or args.sigma >= 0, "must be >= 0"),
                  ("--epsilon", args.epsilon, args.epsilon is None or args.epsilon > 0, "must be > 0"),
                  ("--batch", args.batch, (args.batch is None) == (args.records is None), "goes with --records"),
                  ("--batch", args.batch, args.batch is None or 1 <= args.batch <= args.records, "must be in 1..--records")]
        for field, value, ok, reason in checks:
            if not ok:
                raise InputError(field, value, reason)
        if args.sampling == "poisson" and args.batch is None:
            raise InputError("--sampling", "poisson", "needs --records and --batch (q = batch/records)")
        if args.per_example and args.relation != "add_remove_record":
            raise InputError("--per-example", True, f"changes the sensitivity under add_remove_record only, not "
                             f"{args.relation}")
        sensitivity = args.tau if args.per_example else privacy.sensitivity(args.tau, args.relation)
        if args.sampling == "poisson":
            mech = lambda sigma: [privacy.Mechanism(sigma, sensitivity, args.relation, poisson=args.batch / args.records)]
        else:
            mech = lambda sigma: [privacy.Mechanism(sigma, sensitivity, args.relation, args.records, args.batch)]
        try:
            privacy.Accountant(mech(1.0), args.delta, args.accountant)
        except InputError as e:  # the config's field, said as this tool's option
            option = {"method.sampling": "--sampling", "method.accountant": "--accountant"}.get(e.field, e.field)
            raise InputError(option, e.value, e.reason) from None
        if args.sigma is not None:
            eps = privacy.Accountant(mech(args.sigma), args.delta, args.accountant, "--sigma").epsilon(args.rounds)
            print(f"σ = {args.sigma:g}, τ = {args.tau:g} ({args.relation}, sensitivity {sensitivity:g}"
                  f"{', Poisson q = %g' % (args.batch / args.records) if args.sampling == 'poisson' else ''}), "
                  f"{args.rounds} rounds: ε = {eps:.6g} at δ = {args.delta:g} ({args.accountant})")
        else:
            sigma = privacy.sigma_for(args.epsilon, args.delta, args.rounds, mech(1.0), args.accountant, "--epsilon")
            print(f"ε = {args.epsilon:g} at δ = {args.delta:g} after {args.rounds} rounds with τ = {args.tau:g} "
                  f"({args.relation}, {args.accountant}): σ = {sigma:.6g} (noise multiplier σ/Δ = {sigma / sensitivity:.6g})")
        return 0
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return e.exit_code
