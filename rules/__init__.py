"""nanlint's rules, one per file (installed as ``nanlint.rules``).

Each file defines one ``nanlint.rule.Rule`` subclass; the registry finds it by
itself. See ``nanlint/rule.py`` for what a rule may do.
"""
