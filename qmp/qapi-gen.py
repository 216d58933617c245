#!/usr/bin/env python3
"""QMP schema compiler in the spirit of QEMU's scripts/qapi.

Reads one schema file in QAPI syntax (single-quoted JSON expressions, each
preceded by a '##' doc block) and writes, from that one source:

  PREFIX.h / PREFIX.cc  C++20: a struct per 'struct', an enum class per
                        'enum', one pure virtual method per 'command' on a
                        Commands interface, dispatch() that checks the
                        arguments against the schema and marshals the
                        answer, an emitter per 'event', and the
                        introspection (QEMU's SchemaInfo list, unmasked).
  PREFIX.md             the reference page for docs/.

A definition without a doc block, a member without its @member line, a
command with a return but no "Returns:" section, an unknown type, or a name
that breaks QEMU's naming rules stops the build with file:line.

Supported: 'enum', 'struct', 'command' ('data', 'returns', 'allow-oob'),
'event' ('data'), and 'if' on any definition (a C preprocessor symbol: the
definition exists only when it is defined, as QEMU's 'if'). Names starting
'x-', 'X_' or 'X' are unstable (QEMU's policy) and carry the 'unstable'
feature in the introspection.
"""

import argparse
import json
import re
import sys
import textwrap

BUILTINS = {
    # name: (C++ type, introspection json-type)
    'str': ('std::string', 'string'),
    'int': ('int64_t', 'int'),
    'uint64': ('uint64_t', 'int'),
    'bool': ('bool', 'boolean'),
    'number': ('double', 'number'),
    'any': ('nlohmann::json', 'value'),
}


class SchemaError(Exception):
    def __init__(self, path, line, message):
        super().__init__(f'{path}:{line}: {message}')


# ---------------------------------------------------------------- parsing

class Doc:
    def __init__(self, line):
        self.line = line
        self.symbol = None     # "@name:" on the first line
        self.heading = None    # "= Title"
        self.body = []         # free text before the first section
        self.members = {}      # member -> text
        self.sections = {}     # "Returns", "Since", "Example", "Note" -> text


def parse_doc(path, line, lines):
    doc = Doc(line)
    current = None  # ('member', name) or ('section', name) or None
    for number, text in lines:
        if text and not text.startswith(' '):
            raise SchemaError(path, number, "doc comment text must follow '# '")
        text = text[1:] if text.startswith(' ') else text
        if doc.symbol is None and doc.heading is None and not doc.body and current is None:
            match = re.fullmatch(r'@([\w-]+):\s*', text)
            if match:
                doc.symbol = match.group(1)
                continue
            if text.startswith('= '):
                doc.heading = text[2:].strip()
                continue
        member = re.match(r'@([\w-]+):\s?(.*)', text)
        section = re.match(r'(Returns|Since|Example|Note|Errors):\s?(.*)', text)
        if member and doc.symbol is not None:
            current = ('member', member.group(1))
            if current[1] in doc.members:
                raise SchemaError(path, number, f"'@{current[1]}' documented twice")
            doc.members[current[1]] = member.group(2).strip()
        elif section:
            current = ('section', section.group(1))
            doc.sections[current[1]] = section.group(2).rstrip()
        elif current is None:
            doc.body.append(text.rstrip())
        elif current[0] == 'member':
            doc.members[current[1]] = (doc.members[current[1]] + ' ' + text.strip()).strip()
        else:
            doc.sections[current[1]] += '\n' + text.rstrip()
    doc.body = '\n'.join(doc.body).strip()
    for name in doc.sections:
        doc.sections[name] = doc.sections[name].strip('\n')
    return doc


class Parser:
    """QAPI's expression syntax: JSON with single-quoted strings."""

    def __init__(self, path, text):
        self.path = path
        self.text = text
        self.pos = 0
        self.line = 1

    def error(self, message):
        raise SchemaError(self.path, self.line, message)

    def skip_blank(self):
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '\n':
                self.line += 1
                self.pos += 1
            elif char in ' \t':
                self.pos += 1
            else:
                return

    def parse(self):
        """[(doc or None, expression, line)]"""
        items = []
        pending_doc = None
        while True:
            self.skip_blank()
            if self.pos >= len(self.text):
                break
            if self.text.startswith('##', self.pos) and self.rest_of_line().strip() == '##':
                doc_line = self.line
                self.next_line()
                lines = []
                while True:
                    if self.pos >= len(self.text):
                        self.error('doc comment not closed by ##')
                    raw = self.rest_of_line()
                    number = self.line
                    self.next_line()
                    if raw.strip() == '##':
                        break
                    if not raw.startswith('#'):
                        self.error("doc comment lines start with '#'")
                    lines.append((number, raw[1:]))
                doc = parse_doc(self.path, doc_line, lines)
                if doc.heading is not None:
                    items.append((doc, None, doc_line))
                else:
                    pending_doc = doc
            elif self.text[self.pos] == '#':
                self.next_line()
            else:
                line = self.line
                value = self.value()
                if not isinstance(value, dict):
                    self.error('top-level value must be an object')
                items.append((pending_doc, value, line))
                pending_doc = None
        if pending_doc is not None:
            raise SchemaError(self.path, pending_doc.line, 'doc comment documents nothing')
        return items

    def rest_of_line(self):
        end = self.text.find('\n', self.pos)
        return self.text[self.pos:] if end < 0 else self.text[self.pos:end]

    def next_line(self):
        end = self.text.find('\n', self.pos)
        self.pos = len(self.text) if end < 0 else end + 1
        self.line += 1

    def value(self):
        self.skip_blank_and_comments()
        if self.pos >= len(self.text):
            self.error('unexpected end of file')
        char = self.text[self.pos]
        if char == '{':
            return self.sequence('}', dict)
        if char == '[':
            return self.sequence(']', list)
        if char == "'":
            return self.string()
        for word, result in (('true', True), ('false', False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        self.error(f"unexpected '{char}'")

    def skip_blank_and_comments(self):
        while True:
            self.skip_blank()
            if self.pos < len(self.text) and self.text[self.pos] == '#':
                self.next_line()
            else:
                return

    def string(self):
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "'":
                return ''.join(out)
            if char == '\n':
                self.error('string runs past the end of the line')
            if char == '\\':
                if self.pos >= len(self.text):
                    break
                out.append(self.text[self.pos])
                self.pos += 1
            else:
                out.append(char)
        self.error('string not closed')

    def sequence(self, close, kind):
        self.pos += 1
        result = kind()
        first = True
        while True:
            self.skip_blank_and_comments()
            if self.pos < len(self.text) and self.text[self.pos] == close:
                self.pos += 1
                return result
            if not first:
                self.expect(',')
            first = False
            if kind is dict:
                self.skip_blank_and_comments()
                if self.pos >= len(self.text) or self.text[self.pos] != "'":
                    self.error('object keys are strings')
                key = self.string()
                if key in result:
                    self.error(f"duplicate key '{key}'")
                self.expect(':')
                result[key] = self.value()
            else:
                result.append(self.value())

    def expect(self, char):
        self.skip_blank_and_comments()
        if self.pos >= len(self.text) or self.text[self.pos] != char:
            self.error(f"expected '{char}'")
        self.pos += 1


# ---------------------------------------------------------------- model

class Member:
    def __init__(self, name, type_ref, optional, doc):
        self.name = name
        self.type = type_ref   # a type name, or [name] as a one-element list
        self.optional = optional
        self.doc = doc


class Entity:
    def __init__(self, meta, name, expr, doc, line):
        self.meta = meta  # enum, struct, command, event
        self.name = name
        self.expr = expr
        self.doc = doc
        self.line = line
        self.condition = expr.get('if')
        self.members = []     # struct, command arguments, event data
        self.values = []      # enum
        self.returns = None   # command: a type reference or None
        self.arg_type = None  # command/event: a struct name when 'data' names one
        self.allow_oob = bool(expr.get('allow-oob', False))

    @property
    def unstable(self):
        return self.name.startswith(('x-', 'X_')) or re.match(r'X[A-Z]', self.name) is not None


ALLOWED_KEYS = {
    'enum': {'enum', 'data', 'if'},
    'struct': {'struct', 'data', 'if'},
    'command': {'command', 'data', 'returns', 'allow-oob', 'if'},
    'event': {'event', 'data', 'if'},
}


def build_model(path, items):
    entities = []
    headings = []
    for doc, expr, line in items:
        if expr is None:
            entities.append(('heading', doc))
            continue
        metas = [meta for meta in ALLOWED_KEYS if meta in expr]
        if len(metas) != 1:
            raise SchemaError(path, line, "a definition has exactly one of 'enum', 'struct', 'command', 'event'")
        meta = metas[0]
        unknown = set(expr) - ALLOWED_KEYS[meta]
        if unknown:
            raise SchemaError(path, line, f"{meta} has unknown keys: {', '.join(sorted(unknown))}")
        name = expr[meta]
        if doc is None:
            raise SchemaError(path, line, f"{meta} '{name}' has no doc comment")
        if doc.symbol != name:
            raise SchemaError(path, doc.line, f"doc comment names '{doc.symbol}', the definition is '{name}'")
        if not doc.body:
            raise SchemaError(path, doc.line, f"'{name}' has no description")
        entity = Entity(meta, name, expr, doc, line)
        check_name(path, entity)
        if 'if' in expr and not re.fullmatch(r'[A-Z][A-Z0-9_]*', str(expr['if'])):
            raise SchemaError(path, line, "'if' is one preprocessor symbol")
        if meta == 'enum':
            if not isinstance(expr.get('data'), list) or not expr['data']:
                raise SchemaError(path, line, f"enum '{name}' needs a list of values")
            entity.values = expr['data']
            documented = set(entity.values)
        else:
            data = expr.get('data', {})
            if isinstance(data, str):
                if meta == 'struct':
                    raise SchemaError(path, line, "a struct's 'data' is an object")
                entity.arg_type = data
                documented = set()
            elif isinstance(data, dict):
                for key, type_ref in data.items():
                    optional = key.startswith('*')
                    member_name = key[1:] if optional else key
                    if not re.fullmatch(r'[a-z][a-z0-9-]*', member_name):
                        raise SchemaError(path, line, f"member '{member_name}' of '{name}' is not lower-kebab")
                    entity.members.append(Member(member_name, type_ref, optional, doc.members.get(member_name)))
                documented = {member.name for member in entity.members}
                if meta == 'struct' and not entity.members:
                    raise SchemaError(path, line, f"struct '{name}' has no members")
            else:
                raise SchemaError(path, line, f"'data' of '{name}' is an object or a struct name")
            if meta == 'command' and 'returns' in expr:
                entity.returns = expr['returns']
                if 'Returns' not in doc.sections:
                    raise SchemaError(path, doc.line, f"command '{name}' returns a value but has no 'Returns:' section")
        for item in sorted(documented):
            if not doc.members.get(item):
                raise SchemaError(path, doc.line, f"'@{item}' of '{name}' is not documented")
        for item in doc.members:
            if item not in documented:
                raise SchemaError(path, doc.line, f"'@{item}' is documented but '{name}' has no such member")
        if 'Since' not in doc.sections:
            raise SchemaError(path, doc.line, f"'{name}' has no 'Since:' section")
        entities.append((meta, entity))
    named = {entity.name: entity for meta, entity in entities if meta != 'heading'}
    if len(named) != sum(1 for meta, _ in entities if meta != 'heading'):
        raise SchemaError(path, 1, 'a name is defined twice')
    types = {name: entity for name, entity in named.items() if entity.meta in ('enum', 'struct')}
    for meta, entity in entities:
        if meta == 'heading':
            continue
        refs = [member.type for member in entity.members]
        if entity.returns is not None:
            refs.append(entity.returns)
        for ref in refs:
            check_type_ref(path, entity, ref, types)
        if entity.arg_type is not None:
            target = types.get(entity.arg_type)
            if target is None or target.meta != 'struct':
                raise SchemaError(path, entity.line, f"'data' of '{entity.name}' names no struct")
    return entities, named, types


def check_name(path, entity):
    rules = {
        'command': (r'[a-z][a-z0-9-]*', 'lower-kebab'),
        'event': (r'[A-Z][A-Z0-9_]*', 'UPPER_SNAKE'),
        'struct': (r'[A-Z][A-Za-z0-9]*', 'CamelCase'),
        'enum': (r'[A-Z][A-Za-z0-9]*', 'CamelCase'),
    }
    pattern, style = rules[entity.meta]
    if not re.fullmatch(pattern, entity.name):
        raise SchemaError(path, entity.line, f"{entity.meta} name '{entity.name}' is not {style}")
    if entity.meta == 'enum':
        for value in entity.expr['data']:
            if not isinstance(value, str) or not re.fullmatch(r'[a-z][a-z0-9-]*', value):
                raise SchemaError(path, entity.line, f"enum value '{value}' is not lower-kebab")


def check_type_ref(path, entity, ref, types):
    if isinstance(ref, list):
        if len(ref) != 1 or not isinstance(ref[0], str):
            raise SchemaError(path, entity.line, f"an array type in '{entity.name}' is ['Type']")
        ref = ref[0]
    if not isinstance(ref, str) or (ref not in BUILTINS and ref not in types):
        raise SchemaError(path, entity.line, f"'{entity.name}' uses unknown type '{ref}'")


# ---------------------------------------------------------------- naming

def cpp_identifier(name):
    return name.replace('-', '_').lower()


def cpp_enum_value(value):
    return 'k' + ''.join(part.capitalize() for part in value.split('-'))


def camel(name):
    return ''.join(part.capitalize() for part in re.split(r'[-_]', name.lower()))


def arguments_struct(entity):
    """The C++ struct carrying a command's arguments or an event's data."""
    if entity.arg_type is not None:
        return entity.arg_type
    if not entity.members:
        return None
    return camel(entity.name) + ('Arguments' if entity.meta == 'command' else 'Data')


def schema_type_name(ref):
    if isinstance(ref, list):
        return '[' + ref[0] + ']'
    return ref


def implicit_type_name(entity):
    return f'q_obj_{entity.name}-arg'


def cpp_type(ref):
    if isinstance(ref, list):
        return f'std::vector<{cpp_type(ref[0])}>'
    if ref in BUILTINS:
        return BUILTINS[ref][0]
    return ref


def member_cpp_type(member):
    base = cpp_type(member.type)
    return f'std::optional<{base}>' if member.optional else base


# ---------------------------------------------------------------- introspection

def introspection(entities, types):
    """[(condition, SchemaInfo)] in QEMU's shape; types used by an entity
    under a condition carry that condition unless something unconditional
    uses them too."""
    infos = []
    used = {}  # schema type name -> set of conditions (None: unconditional)

    def use(ref, condition):
        name = schema_type_name(ref)
        if condition in used.get(name, set()):
            return
        used.setdefault(name, set()).add(condition)
        if isinstance(ref, list):
            use(ref[0], condition)
        elif ref in types and types[ref].meta == 'struct':
            for member in types[ref].members:
                use(member.type, condition)

    def members_info(members):
        out = []
        for member in members:
            info = {'name': member.name, 'type': schema_type_name(member.type)}
            if member.optional:
                info['default'] = None
            out.append(info)
        return out

    def features(entity):
        return {'features': ['unstable']} if entity.unstable else {}

    for meta, entity in entities:
        if meta not in ('command', 'event'):
            continue
        condition = entity.condition
        if entity.arg_type is not None:
            arg_name = entity.arg_type
            use(entity.arg_type, condition)
        elif entity.members:
            arg_name = implicit_type_name(entity)
            infos.append((condition, {'name': arg_name, 'meta-type': 'object',
                                      'members': members_info(entity.members)}))
            for member in entity.members:
                use(member.type, condition)
        else:
            arg_name = 'q_empty'
            used.setdefault('q_empty', set()).add(condition)
        if meta == 'command':
            info = {'name': entity.name, 'meta-type': 'command', 'arg-type': arg_name,
                    'ret-type': schema_type_name(entity.returns) if entity.returns is not None else 'q_empty'}
            if entity.returns is not None:
                use(entity.returns, condition)
            else:
                used.setdefault('q_empty', set()).add(condition)
            if entity.allow_oob:
                info['allow-oob'] = True
        else:
            info = {'name': entity.name, 'meta-type': 'event', 'arg-type': arg_name}
        info.update(features(entity))
        infos.append((condition, info))

    def type_condition(name):
        conditions = used[name]
        return None if None in conditions or len(conditions) != 1 else next(iter(conditions))

    for name in sorted(used):
        condition = type_condition(name)
        if name == 'q_empty':
            infos.append((condition, {'name': 'q_empty', 'meta-type': 'object', 'members': []}))
        elif name.startswith('['):
            infos.append((condition, {'name': name, 'meta-type': 'array', 'element-type': name[1:-1]}))
        elif name in BUILTINS:
            infos.append((condition, {'name': name, 'meta-type': 'builtin', 'json-type': BUILTINS[name][1]}))
        else:
            entity = types[name]
            if entity.meta == 'enum':
                info = {'name': name, 'meta-type': 'enum', 'values': entity.values,
                        'members': [{'name': value} for value in entity.values]}
            else:
                info = {'name': name, 'meta-type': 'object', 'members': members_info(entity.members)}
            info.update(features(entity))
            infos.append((condition, info))
    return infos


# ---------------------------------------------------------------- C++

def guard_open(condition):
    return f'#if defined({condition})\n' if condition else ''


def guard_close(condition):
    return f'#endif  // {condition}\n' if condition else ''


def comment(text, indent=''):
    lines = []
    for paragraph in text.split('\n'):
        wrapped = textwrap.wrap(paragraph, 96 - len(indent)) or ['']
        lines.extend((indent + '// ' + line).rstrip() for line in wrapped)
    return '\n'.join(lines) + '\n'


def generate_header(entities, types, namespace, source_name, prefix):
    out = [f'// Generated by qmp/qapi-gen.py from {source_name}; do not edit.\n',
           '#pragma once\n\n',
           '#include <cstdint>\n#include <optional>\n#include <string>\n#include <string_view>\n#include <vector>\n\n',
           '#include <nlohmann/json.hpp>\n\n',
           '#include <vmpod/base/result.h>\n#include <vmpod/qmp/qmp_protocol.h>\n#include <vmpod/qmp/qmp_server.h>\n\n',
           f'namespace {namespace} {{\n\n']
    for meta, entity in entities:
        if meta == 'enum':
            out.append(guard_open(entity.condition))
            out.append(comment(entity.doc.body))
            out.append(f'enum class {entity.name} {{\n')
            for value in entity.values:
                out.append(comment(entity.doc.members[value], '  '))
                out.append(f'  {cpp_enum_value(value)},\n')
            out.append('};\n')
            out.append(f'std::string_view to_string({entity.name} value);\n')
            out.append(f'void to_json(nlohmann::json& out, {entity.name} value);\n')
            out.append(f'void from_json(const nlohmann::json& in, {entity.name}& value);\n')
            out.append(guard_close(entity.condition) + '\n')
    for meta, entity in entities:
        struct_name = entity.name if meta == 'struct' else (
            arguments_struct(entity) if meta in ('command', 'event') and entity.arg_type is None else None)
        if struct_name is None:
            continue
        out.append(guard_open(entity.condition))
        out.append(comment(entity.doc.body if meta == 'struct' else f'The arguments of {entity.name}.'
                           if meta == 'command' else f'The data of {entity.name}.'))
        out.append(f'struct {struct_name} {{\n')
        for member in entity.members:
            out.append(comment(member.doc, '  '))
            out.append(f'  {member_cpp_type(member)} {cpp_identifier(member.name)}{default_init(member, types)};\n')
        out.append('};\n')
        out.append(f'void to_json(nlohmann::json& out, const {struct_name}& value);\n')
        out.append(f'void from_json(const nlohmann::json& in, {struct_name}& value);\n')
        out.append(guard_close(entity.condition) + '\n')

    out.append('// One handler per command; dispatch() calls them with checked arguments.\n')
    out.append('class Commands {\n public:\n  virtual ~Commands() = default;\n')
    for meta, entity in entities:
        if meta != 'command':
            continue
        out.append(guard_open(entity.condition))
        out.append(comment(entity.doc.body.split('\n\n')[0], '  '))
        out.append(f'  virtual {handler_signature(entity)} = 0;\n')
        out.append(guard_close(entity.condition))
    out.append('};\n\n')
    out.append('// Whether name is a command of this schema.\n')
    out.append('bool is_command(std::string_view name);\n')
    out.append("// Checks request's arguments as QEMU's input visitor does (QEMU's error\n"
               "// texts), runs the command's handler and marshals its answer. For a\n"
               '// command of this schema only.\n')
    out.append('qmp::Reply dispatch(Commands& commands, const qmp::Request& request);\n')
    out.append("// QEMU's SchemaInfo list for this schema: query-qmp-schema's answer.\n")
    out.append('const nlohmann::json& introspection();\n')
    out.append('// The command names, as query-commands lists them.\n')
    out.append('std::vector<std::string> command_names();\n\n')
    for meta, entity in entities:
        if meta != 'event':
            continue
        out.append(guard_open(entity.condition))
        out.append(comment(entity.doc.body.split('\n\n')[0]))
        out.append(f'inline constexpr std::string_view k{camel(entity.name)} = "{entity.name}";\n')
        data = arguments_struct(entity)
        params = f', const {data}& data' if data else ''
        out.append(f'void emit_{cpp_identifier(entity.name)}(qmp::QmpServer& server{params});\n')
        out.append(guard_close(entity.condition) + '\n')
    out.append(f'}}  // namespace {namespace}\n')
    return ''.join(out)


def default_init(member, types):
    if member.optional or isinstance(member.type, list):
        return ''
    if member.type in ('int', 'uint64', 'number'):
        return ' = 0'
    if member.type == 'bool':
        return ' = false'
    if member.type in types and types[member.type].meta == 'enum':
        return '{}'
    return ''


def handler_signature(entity):
    returns = f'Result<{cpp_type(entity.returns)}>' if entity.returns is not None else 'Status'
    data = arguments_struct(entity)
    params = f'const {data}& arguments' if data else ''
    return f'{returns} {cpp_identifier(entity.name)}({params})'


def generate_source(entities, types, infos, namespace, source_name, header_name):
    out = [f'// Generated by qmp/qapi-gen.py from {source_name}; do not edit.\n',
           f'#include "{header_name}"\n\n',
           '#include <vmpod/qmp/qapi.h>\n\n',
           f'namespace {namespace} {{\n\n']
    for meta, entity in entities:
        if meta == 'enum':
            name = entity.name
            out.append(guard_open(entity.condition))
            out.append(f'std::string_view to_string({name} value) {{\n  switch (value) {{\n')
            for value in entity.values:
                out.append(f'    case {name}::{cpp_enum_value(value)}: return "{value}";\n')
            out.append('  }\n  return "";\n}\n\n')
            out.append(f'void to_json(nlohmann::json& out, {name} value) {{ out = to_string(value); }}\n\n')
            out.append(f'void from_json(const nlohmann::json& in, {name}& value) {{\n'
                       '  const std::string& text = in.get_ref<const std::string&>();\n')
            for value in entity.values:
                out.append(f'  if (text == "{value}") {{ value = {name}::{cpp_enum_value(value)}; return; }}\n')
            out.append(f'  throw std::invalid_argument("not a {name}: " + text);\n}}\n')
            out.append(guard_close(entity.condition) + '\n')
    for meta, entity in entities:
        struct_name = entity.name if meta == 'struct' else (
            arguments_struct(entity) if meta in ('command', 'event') and entity.arg_type is None else None)
        if struct_name is None:
            continue
        out.append(guard_open(entity.condition))
        out.append(f'void to_json(nlohmann::json& out, const {struct_name}& value) {{\n'
                   '  out = nlohmann::json::object();\n')
        for member in entity.members:
            field = cpp_identifier(member.name)
            if member.optional:
                out.append(f'  if (value.{field}) out["{member.name}"] = *value.{field};\n')
            else:
                out.append(f'  out["{member.name}"] = value.{field};\n')
        out.append('}\n\n')
        out.append(f'void from_json(const nlohmann::json& in, {struct_name}& value) {{\n')
        for member in entity.members:
            field = cpp_identifier(member.name)
            if member.optional:
                out.append(f'  if (auto found = in.find("{member.name}"); found != in.end()) '
                           f'value.{field} = found->get<{cpp_type(member.type)}>();\n')
            else:
                out.append(f'  in.at("{member.name}").get_to(value.{field});\n')
        out.append('}\n')
        out.append(guard_close(entity.condition) + '\n')

    out.append('const nlohmann::json& introspection() {\n'
               '  static const nlohmann::json schema = [] {\n'
               '    nlohmann::json list = nlohmann::json::array();\n')
    for condition, info in infos:
        out.append(guard_open(condition))
        out.append(f'    list.push_back(nlohmann::json::parse(R"qapi({json.dumps(info)})qapi"));\n')
        out.append(guard_close(condition))
    out.append('    return list;\n  }();\n  return schema;\n}\n\n')

    commands = [entity for meta, entity in entities if meta == 'command']
    out.append('std::vector<std::string> command_names() {\n  std::vector<std::string> names;\n')
    for entity in commands:
        out.append(guard_open(entity.condition))
        out.append(f'  names.emplace_back("{entity.name}");\n')
        out.append(guard_close(entity.condition))
    out.append('  return names;\n}\n\n')
    out.append('bool is_command(std::string_view name) {\n')
    for entity in commands:
        out.append(guard_open(entity.condition))
        out.append(f'  if (name == "{entity.name}") return true;\n')
        out.append(guard_close(entity.condition))
    out.append('  return false;\n}\n\n')

    out.append('namespace {\n\n'
               'const qmp::SchemaIndex& schema_index() {\n'
               '  static const qmp::SchemaIndex index(introspection());\n'
               '  return index;\n}\n\n'
               '}  // namespace\n\n')
    out.append('qmp::Reply dispatch(Commands& commands, const qmp::Request& request) {\n'
               '  if (auto error = schema_index().check_arguments(request.command, request.arguments)) {\n'
               '    return qmp::qmp_fail(qmp::ErrorClass::kGenericError, *error);\n'
               '  }\n')
    for entity in commands:
        out.append(guard_open(entity.condition))
        out.append(f'  if (request.command == "{entity.name}") {{\n')
        data = arguments_struct(entity)
        call = f'commands.{cpp_identifier(entity.name)}('
        if data:
            out.append(f'    auto answer = {call}request.arguments.get<{data}>());\n')
        else:
            out.append(f'    auto answer = {call});\n')
        out.append('    return qmp::reply_of(answer);\n')
        out.append('  }\n')
        out.append(guard_close(entity.condition))
    out.append('  return qmp::qmp_fail(qmp::ErrorClass::kCommandNotFound,\n'
               '                       "The command " + request.command + " has not been found");\n}\n\n')
    for meta, entity in entities:
        if meta != 'event':
            continue
        data = arguments_struct(entity)
        out.append(guard_open(entity.condition))
        if data:
            out.append(f'void emit_{cpp_identifier(entity.name)}(qmp::QmpServer& server, const {data}& data) {{\n'
                       f'  server.emit_event(k{camel(entity.name)}, data);\n}}\n')
        else:
            out.append(f'void emit_{cpp_identifier(entity.name)}(qmp::QmpServer& server) {{\n'
                       f'  server.emit_event(k{camel(entity.name)});\n}}\n')
        out.append(guard_close(entity.condition) + '\n')
    out.append(f'}}  // namespace {namespace}\n')
    return ''.join(out)


# ---------------------------------------------------------------- docs

def doc_type(ref):
    if isinstance(ref, list):
        return f'array of {doc_type(ref[0])}'
    return f'`{ref}`'


def generate_docs(entities, named, source_name):
    out = [f'<!-- Generated by qmp/qapi-gen.py from {source_name}; do not edit. -->\n\n']
    for meta, entity in entities:
        if meta == 'heading':
            out.append(f'# {entity.heading}\n\n')
            if entity.body:
                out.append(entity.body + '\n\n')
            continue
        out.append(f'## `{entity.name}` ({meta})\n\n')
        out.append(entity.doc.body + '\n\n')
        if entity.condition:
            out.append(f'Only in builds that define `{entity.condition}`.\n\n')
        if entity.meta == 'enum':
            out.append('| value | meaning |\n|---|---|\n')
            for value in entity.values:
                out.append(f'| `{value}` | {entity.doc.members[value]} |\n')
            out.append('\n')
        elif entity.members:
            title = {'command': 'Arguments', 'event': 'Data', 'struct': 'Members'}[meta]
            out.append(f'{title}:\n\n| name | type | meaning |\n|---|---|---|\n')
            for member in entity.members:
                optional = ' (optional)' if member.optional else ''
                out.append(f'| `{member.name}` | {doc_type(member.type)}{optional} | {member.doc} |\n')
            out.append('\n')
        elif entity.arg_type:
            out.append(f'Arguments: the members of `{entity.arg_type}`.\n\n')
        if meta == 'command':
            if entity.returns is not None:
                out.append(f'Returns ({doc_type(entity.returns)}): {entity.doc.sections["Returns"]}\n\n')
            else:
                out.append('Returns: `{}`.\n\n')
        for section in ('Errors', 'Note'):
            if section in entity.doc.sections:
                out.append(f'{section}: {entity.doc.sections[section]}\n\n')
        if 'Example' in entity.doc.sections:
            out.append('Example:\n\n```\n' + entity.doc.sections['Example'] + '\n```\n\n')
        out.append(f'Since: {entity.doc.sections["Since"]}\n\n')
    return ''.join(out).rstrip('\n') + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('schema')
    parser.add_argument('--namespace', required=True)
    parser.add_argument('--header', required=True, help='PREFIX.h to write')
    parser.add_argument('--source', required=True, help='PREFIX.cc to write')
    parser.add_argument('--docs', required=True, help='PREFIX.md to write')
    args = parser.parse_args()
    with open(args.schema, encoding='utf-8') as schema_file:
        text = schema_file.read()
    source_name = args.schema.split('/')[-1]
    try:
        items = Parser(args.schema, text).parse()
        entities, named, types = build_model(args.schema, items)
    except SchemaError as error:
        print(f'qapi-gen: {error}', file=sys.stderr)
        return 1
    model = [(meta, entity) for meta, entity in entities]
    infos = introspection([(m, e) for m, e in model if m != 'heading'], types)
    header_name = args.header.split('/')[-1]
    outputs = {
        args.header: generate_header([(m, e) for m, e in model if m != 'heading'], types, args.namespace,
                                     source_name, header_name),
        args.source: generate_source([(m, e) for m, e in model if m != 'heading'], types, infos,
                                     args.namespace, source_name, header_name),
        args.docs: generate_docs(model, named, source_name),
    }
    for path, content in outputs.items():
        with open(path, 'w', encoding='utf-8') as out:
            out.write(content)
    return 0


if __name__ == '__main__':
    sys.exit(main())
