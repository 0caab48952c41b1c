"""Code that runs inside a sandboxed child, beside code nobody vouches for.

Everything in this package executes in the same interpreter as a candidate's solution (or a
reference program, or the compiler run on a candidate's sources), so whatever it reports is
the child's word, not a fact: the parent (`workers/evaluation/*.py` and `sandbox/`) decides
the verdict only from what it checks itself — output bytes it compares with the reference's,
times on its own clock, builds it made and inspected. Keep this side small: it executes and
reports; it never judges.

    serve.py       set up Model / ModelNew, then run the parent's batches
    problem.py     the reference program's functions (get_inputs, get_init_inputs, Model)
    outputs.py     forward()'s outputs: plain-tensor checks, checksums, stored bytes
    extensions.py  load_inline/load answered by the parent's builds; launch counting
    build.py       the build sandbox: compile one extension, import nothing
"""
