#!/usr/bin/env python3
"""qapi-gen.py refuses a schema that QEMU's generator would refuse, naming
file and line, and writes nothing for it; a good schema compiles."""

import os
import subprocess
import sys
import tempfile

GOOD = """
##
# = Test
##

##
# @TestKind:
#
# Kinds.
#
# @one: the first
# @two: the second
#
# Since: 0.1
##
{ 'enum': 'TestKind', 'data': [ 'one', 'two' ] }

##
# @test-query:
#
# Answers.
#
# @kind: which kind
#
# Returns: the kind's name.
#
# Since: 0.1
##
{ 'command': 'test-query', 'data': { 'kind': 'TestKind' }, 'returns': 'str' }
"""

BAD = {
    'no doc comment': ("{ 'command': 'test-a' }", "has no doc comment"),
    'undocumented member': ("""
##
# @test-a:
#
# Does.
#
# Since: 0.1
##
{ 'command': 'test-a', 'data': { 'x': 'int' } }""", "'@x' of 'test-a' is not documented"),
    'documented member that does not exist': ("""
##
# @test-a:
#
# Does.
#
# @y: nothing
#
# Since: 0.1
##
{ 'command': 'test-a' }""", "has no such member"),
    'returns without a Returns section': ("""
##
# @test-a:
#
# Does.
#
# Since: 0.1
##
{ 'command': 'test-a', 'returns': 'str' }""", "has no 'Returns:' section"),
    'unknown type': ("""
##
# @test-a:
#
# Does.
#
# @x: a thing
#
# Since: 0.1
##
{ 'command': 'test-a', 'data': { 'x': 'Nope' } }""", "unknown type 'Nope'"),
    'event not UPPER_SNAKE': ("""
##
# @test_event:
#
# Happens.
#
# Since: 0.1
##
{ 'event': 'test_event' }""", "is not UPPER_SNAKE"),
    'doc names another definition': ("""
##
# @test-b:
#
# Does.
#
# Since: 0.1
##
{ 'command': 'test-a' }""", "doc comment names 'test-b'"),
    'missing Since': ("""
##
# @test-a:
#
# Does.
##
{ 'command': 'test-a' }""", "has no 'Since:' section"),
    'unknown key': ("""
##
# @test-a:
#
# Does.
#
# Since: 0.1
##
{ 'command': 'test-a', 'boxed': true }""", "unknown keys: boxed"),
    'unterminated string': ("{ 'command': 'test-a }", "string not closed"),
}


def compile_schema(generator, directory, text):
    schema = os.path.join(directory, 'test.json')
    with open(schema, 'w', encoding='utf-8') as out:
        out.write(text)
    outputs = [os.path.join(directory, name) for name in ('t.h', 't.cc', 't.md')]
    for path in outputs:
        if os.path.exists(path):
            os.remove(path)
    result = subprocess.run([sys.executable, generator, schema, '--namespace', 'test', '--header', outputs[0],
                             '--source', outputs[1], '--docs', outputs[2]],
                            capture_output=True, text=True, check=False)
    return result, outputs


def main():
    generator = sys.argv[1]
    failures = []
    with tempfile.TemporaryDirectory() as directory:
        result, outputs = compile_schema(generator, directory, GOOD)
        if result.returncode != 0 or not all(os.path.exists(path) for path in outputs):
            failures.append(f'good schema: exit {result.returncode}: {result.stderr}')
        else:
            with open(outputs[2], encoding='utf-8') as docs:
                page = docs.read()
            for expected in ('# Test', '## `test-query` (command)', '| `kind` | `TestKind` | which kind |'):
                if expected not in page:
                    failures.append(f'good schema: docs lack {expected!r}')
        for name, (text, message) in BAD.items():
            result, outputs = compile_schema(generator, directory, text)
            if result.returncode == 0:
                failures.append(f'{name}: accepted')
            elif message not in result.stderr or 'test.json:' not in result.stderr:
                failures.append(f'{name}: error {result.stderr.strip()!r} lacks {message!r} or file:line')
            elif any(os.path.exists(path) for path in outputs):
                failures.append(f'{name}: wrote output anyway')
    for failure in failures:
        print('FAIL', failure)
    print(f'{len(BAD) + 1 - len(failures)} of {len(BAD) + 1} passed')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
