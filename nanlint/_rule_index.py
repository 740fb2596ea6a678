"""Every rule's metadata, so that selecting rules does not import them.

Written by `python -m nanlint.registry` from the rule files; do not edit.
Used only while DIGEST matches them (see nanlint/registry.py)."""

DIGEST = '79f13b1f1dc5027ec40d1d1ac6d15d114bfc01ebcb901f2e679374fceb717111'

RULES = (
    {'code': 'NL001', 'name': 'tiny-epsilon', 'default_enabled': True, 'float16_only': True, 'options': {'threshold': 6.1e-05}},
    {'code': 'NL002', 'name': 'unclamped-exp', 'default_enabled': True, 'float16_only': True, 'options': {}},
    {'code': 'NL003', 'name': 'nonfinite-mask', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL004', 'name': 'missing-grad-clip', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL005', 'name': 'default-init-linear', 'default_enabled': False, 'float16_only': False, 'options': {}},
    {'code': 'NL006', 'name': 'tanh-gate', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL101', 'name': 'log-of-softmax', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL102', 'name': 'unguarded-log', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL103', 'name': 'manual-softmax', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL104', 'name': 'zero-grad-sqrt', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL105', 'name': 'unclamped-acos', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL106', 'name': 'clip-before-unscale', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL107', 'name': 'bce-on-sigmoid', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL108', 'name': 'fp16-overflow-literal', 'default_enabled': True, 'float16_only': True, 'options': {}},
    {'code': 'NL109', 'name': 'where-nan-grad', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL110', 'name': 'uninitialized-parameter', 'default_enabled': True, 'float16_only': False, 'options': {}},
    {'code': 'NL111', 'name': 'unguarded-divisor', 'default_enabled': False, 'float16_only': False, 'options': {}},
)
