"""``--cfg-options key=value ...``, as mmdet's tools take it, with malformed options turned
into usage errors that name the option and the fix (mmengine's own ``DictAction`` ends in a
traceback for a missing ``=`` or unbalanced brackets).

This module imports only argparse and mmengine's config module (no torch), and nothing of
this package, so the tools that answer ``--help`` and argument errors before importing torch
can load it by its path.
"""
import argparse
import re

from mmengine.config import DictAction

_KEY = re.compile(r'^[A-Za-z_][\w]*(\.[\w]+)*$')


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction``, refusing what it cannot parse with a usage error: an option
    without ``=``, a key that is not a dotted name, unbalanced brackets in a value."""

    def __call__(self, parser, namespace, values, option_string=None):
        for kv in values or []:
            key, sep, value = kv.partition('=')
            if not sep:
                parser.error(f'{option_string} {kv}: an option is KEY=VALUE, e.g. '
                             'model.test_cfg.rcnn.max_per_img=20')
            if not _KEY.match(key):
                parser.error(f'{option_string} {kv}: {key!r} is not a config key; keys are dotted names such '
                             'as model.backbone.drop_path_rate')
            if value.count('(') != value.count(')') or value.count('[') != value.count(']'):
                parser.error(f'{option_string} {kv}: unbalanced brackets in the value; quote it for the shell, '
                             f"e.g. {option_string} '{key}=[1, 2]'")
        try:
            super().__call__(parser, namespace, values, option_string)
        except (ValueError, AssertionError) as err:
            parser.error(f'{option_string} {" ".join(values or [])}: cannot parse it ({err})')


def add_cfg_options_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, metavar='KEY=VALUE', help=help)
