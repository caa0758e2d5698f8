// Chat templates rendered as transformers' apply_chat_template renders them: every record of the
// shared reference file (6 real templates x 8 conversations x add_generation_prompt false/true,
// rendered by transformers 5.23 / jinja2 3.1.6) compared byte for byte, then the Jinja semantics
// the reference templates lean on, each checked against jinja2 3.1.6 in transformers' environment
// (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), loopcontrols, json tojson).
import Foundation
import Testing
import DTrainData
import DTrainTestSupport

// MARK: - Reference records

/// One record of `chat-templates/cases.json`.
struct ChatTemplateCase: Decodable, Sendable, CustomTestStringConvertible {
    struct Message: Decodable, Sendable {
        let role: String
        let content: String?
    }

    let model: String
    let `case`: String
    let template: String
    let bos_token: String?
    let eos_token: String?
    let messages: [Message]
    let add_generation_prompt: Bool
    let expected: String?
    let error: String?

    var testDescription: String { "\(model) \(self.case) gen=\(add_generation_prompt)" }

    static let fileURL = Fixtures.referenceDir.appendingPathComponent("chat-templates/cases.json")

    static func load() throws -> [ChatTemplateCase] {
        try JSONDecoder().decode([ChatTemplateCase].self, from: Data(contentsOf: fileURL))
    }

    /// The records, or none when the file is missing (`referenceFileIsComplete` then fails).
    static let all: [ChatTemplateCase] = (try? load()) ?? []
}

/// Where two renderings first differ, with some context, or nil when they are byte-identical.
private func firstDifference(_ actual: String, _ expected: String) -> String? {
    let a = Array(actual.utf8), e = Array(expected.utf8)
    if a == e { return nil }
    var i = 0
    while i < a.count && i < e.count && a[i] == e[i] { i += 1 }
    func around(_ bytes: [UInt8]) -> String {
        let lo = max(0, i - 40), hi = min(bytes.count, i + 40)
        let text = String(decoding: bytes[lo..<hi], as: UTF8.self)
        return text.debugDescription
    }
    return "first difference at byte \(i) (actual \(a.count) bytes, expected \(e.count)): "
        + "actual …\(around(a))…, expected …\(around(e))…"
}

// MARK: - Helpers

/// Renders `source` with `variables`.
private func render(_ source: String, _ variables: [String: TemplateValue] = [:]) throws -> String {
    try ChatTemplate(source: source).render(variables: variables)
}

/// A string given in JSON spelling (as Python's json.dumps printed jinja2's output).
private func json(_ spelled: String) -> String {
    try! JSONDecoder().decode(String.self, from: Data(("\"" + spelled + "\"").utf8))
}

private func expectSame(_ actual: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
    if let difference = firstDifference(actual, expected) {
        Issue.record(Comment(rawValue: difference), sourceLocation: sourceLocation)
    }
}

/// The template of one reference model, e.g. "Qwen2.5-7B-Instruct".
private func referenceTemplate(_ model: String) throws -> ChatTemplateCase {
    try #require(ChatTemplateCase.all.first { $0.model.hasSuffix("/" + model) })
}

/// Messages with an assistant tool call (an `extra` field) and two tool results, as jinja2 saw them.
private let toolConversation: [ChatMessage] = [
    ChatMessage(role: "system", content: "Be brief."),
    ChatMessage(role: "user", content: "Weather in Zürich?"),
    ChatMessage(role: "assistant", content: nil, extra: [
        "tool_calls": [["type": "function",
                        "function": ["name": "get_weather", "arguments": ["city": "Zürich", "units": ["C", 1.5, nil, true]]]]],
    ]),
    ChatMessage(role: "tool", content: #"{"temp": 3}"#),
    ChatMessage(role: "tool", content: "sunny"),
]

private let weatherTools: TemplateValue = [[
    "type": "function",
    "function": ["name": "get_weather", "description": "Weather für a city",
                 "parameters": ["type": "object", "properties": ["city": ["type": "string"]], "required": ["city"]]],
]]

@Suite struct ChatTemplateTests {
    @Test func referenceFileIsComplete() throws {
        let cases = try ChatTemplateCase.load()
        #expect(cases.count == 96)
        #expect(cases.filter { $0.error != nil }.count == 6)
    }

    @Test(arguments: ChatTemplateCase.all)
    func rendersLikeTransformers(_ record: ChatTemplateCase) throws {
        let template = try ChatTemplate(source: record.template)
        let messages = record.messages.map { ChatMessage(role: $0.role, content: $0.content) }
        let render = {
            try template.render(messages: messages, addGenerationPrompt: record.add_generation_prompt,
                                bosToken: record.bos_token, eosToken: record.eos_token)
        }
        if let message = record.error {
            #expect(throws: ChatTemplateError.raised(message: message)) { try render() }
            return
        }
        let expected = try #require(record.expected)
        let actual = try render()
        if let difference = firstDifference(actual, expected) {
            Issue.record("\(record.testDescription): \(difference)")
        }
    }

    // MARK: - Whitespace handling

    @Test func trimBlocksLstripBlocksAndWhitespaceControl() throws {
        let source = "{% if true %}\n  a\n{% endif %}\n  {%- if true -%}\n  b\n  {%+ if true %}c{% endif %}\n"
            + "{%- endif %}\n    {# comment #}\nd {# inline #}\n\t{% set x = 1 +%}\ne"
        expectSame(try render(source), "  a\nb\n  cd \ne")
    }

    @Test func variableTagsKeepTheirNewlineAndTemplateLosesOneTrailingNewline() throws {
        expectSame(try render("  {% if true %}\n  {{ 'y' }}\n  {% endif %}\n"), "  y\n")
        expectSame(try render("a\r\nb\rc\n\n"), "a\nb\nc\n")
        expectSame(try render("{{- ' x ' -}}  \n {{ 'y' }}"), " x y")
    }

    @Test func rawBlockIsVerbatim() throws {
        expectSame(try render("{% raw %}{{ not evaluated }}{% endraw %}!"), "{{ not evaluated }}!")
    }

    // MARK: - Python string semantics

    @Test func pythonStripOnExoticWhitespace() throws {
        // NBSP, ideographic space, em space, line separator, NEL are Python whitespace; U+200B is not.
        let source = #"{{ "\u00a0\u3000\u2003x\u200b\u2028\u0085\t "|trim }}|{{ "\u00a0a b\u3000".strip() }}|"#
            + #"{{ "a\u00a0b\u200bc d".split() }}"#
        expectSame(try render(source), "x\u{200B}|a b|['a', 'b\\u200bc', 'd']")
        let s: TemplateValue = .string("\u{A0}\u{3000} x\u{200B}\r\n\u{2003}")
        expectSame(try render("[{{ s|trim }}][{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}]", ["s": s]),
                   "[x\u{200B}][x\u{200B}][x\u{200B}\r\n\u{2003}][\u{A0}\u{3000} x\u{200B}]")
    }

    @Test func lengthsAndIndicesCountCodePoints() throws {
        expectSame(try render(#"{{ "e\u0301"|length }}{{ "👍🏽"|length }}{{ "héllo"[1:3] }}{{ "héllo"[-1] }}"#),
                   "22élo")
        // A decomposed é must stay decomposed, and differ from the precomposed one.
        let decomposed: TemplateValue = .string("e\u{301}")
        expectSame(try render("{{ s == 'é' }}{{ s }}", ["s": decomposed]), "Falsee\u{301}")
    }

    @Test func stringMethodsAndCaseFilters() throws {
        let source = #"{{ "  Hello World  ".lstrip() }}|{{ "a,b,,c".split(",") }}|{{ "a b c".rsplit(" ", 1) }}|"#
            + #"{{ "Hello".startswith("He") }}{{ "Hello".endswith(("x", "lo")) }}|{{ "Hello".replace("l", "L", 1) }}|"#
            + #"{{ "x\ny\r\nz".splitlines() }}|{{ {'a': 1, 'b': 2}.items()|list }}|{{ {'a':1}.keys()|list }}"#
            + #"{{ {'a':1}.values()|list }}"#
        expectSame(try render(source),
                   "Hello World  |['a', 'b', '', 'c']|['a b', 'c']|TrueTrue|HeLlo|['x', 'y', 'z']|[('a', 1), ('b', 2)]|['a'][1]")
        expectSame(try render(#"{{ "hello world-foo bar(baz"|title }} {{ "hello wORLD"|capitalize }} {{ "ßtraße"|upper }}"#),
                   "Hello World-Foo Bar(Baz Hello world SSTRASSE")
        expectSame(try render(#"{{ 'hello world'.title() }} {{ "don't"|title }} {{ "don't".title() }}"#),
                   "Hello World Don't Don'T")
    }

    @Test func stringLiteralEscapes() throws {
        expectSame(try render(#"{{ "a\tb\\n" }}{{ "\x41\101" }}{{ 'it''s' }}{{ "\u00e9\q" }}"#), "a\tb\\nAAitsé\\q")
    }

    // MARK: - tojson

    @Test func tojsonMatchesPythonJSONDumps() throws {
        let source = #"{{ {"q": "a\"b\\c\n\r\t\u0001\u007f é 😀", "n": [1, 2.5, none, true, 1e20], "e": {}, "l": []} | tojson }}"#
        expectSame(try render(source),
                   json(#"{\"q\": \"a\\\"b\\\\c\\n\\r\\t\\u0001\u007f é 😀\", \"n\": [1, 2.5, null, true, 1e+20], \"e\": {}, \"l\": []}"#))
        expectSame(try render(#"{{ {"a": [1, {"b": 2}], "c": "x"} | tojson(indent=2) }}"#),
                   "{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ],\n  \"c\": \"x\"\n}")
        expectSame(try render(#"{{ "42"|tojson }}{{ x|tojson(ensure_ascii=true) }}"#, ["x": "é😀"]),
                   #""42""\u00e9\ud83d\ude00""#)
    }

    // MARK: - Control flow and scoping

    @Test func loopVariables() throws {
        let source = "{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}"
            + "{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}"
        expectSame(try render(source), "103TrueFalse3b;212FalseFalse3ac;321FalseTrue3b;")
        expectSame(try render("{% for a, b in [[1,2],[3,4]] if a > 1 %}{{a}}{{b}}{{loop.length}}{% endfor %}"), "341")
    }

    @Test func loopElseBreakContinue() throws {
        let source = "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in range(10) %}{% if x == 2 %}"
            + "{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"
        expectSame(try render(source), "empty|0134")
    }

    @Test func setInsideLoopIsPerIterationButNamespacePersists() throws {
        expectSame(try render("{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{x}}{% endfor %}{{x}}"),
                   "0101010")
        let source = "{% set ns = namespace(found=false, n=0) %}{% for m in [1,2,3] %}{% set ns.n = ns.n + m %}"
            + "{% if m == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }}"
        expectSame(try render(source), "True 6")
        expectSame(try render("{% set a, b = 1, 2 %}{{a}}{{b}}{% set t = 1, %}{{t}}{% set s | upper %}q{% endset %}{{ s }}"),
                   "12(1,)Q")
    }

    @Test func slicesAndNegativeIndices() throws {
        expectSame(try render("{% set xs = [0,1,2,3,4,5] %}{{ xs[1:] }}{{ xs[-2:] }}{{ xs[::-2] }}{{ xs[1:-1:2] }}{{ xs[-1] }}"),
                   "[1, 2, 3, 4, 5][4, 5][5, 3, 1][1, 3]5")
    }

    // MARK: - Values, operators, undefined

    @Test func pythonReprAndArithmetic() throws {
        expectSame(try render(#"{{ 1e16 }} {{ 1e15 }} {{ 0.00001 }} {{ 2.5 }} {{ [1, 'a', "it's", none, true] }} {{ (1,) }} {{ {'a': 1} }}"#),
                   #"1e+16 1000000000000000.0 1e-05 2.5 [1, 'a', "it's", None, True] (1,) {'a': 1}"#)
        expectSame(try render("{{ 'ab' * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 3 ** 2 }} {{ 1 ~ none ~ x }}"),
                   "ababab 3 -4 2 3.5 64 1None")
    }

    @Test func undefinedBehavesLikeJinjaDefaultUndefined() throws {
        let source = "{{ missing }}|{{ missing is defined }}|{{ missing|length }}|{{ missing or 'x' }}|"
            + "{{ {'a': 1}.b is defined }}|{{ {'a': 1}.get('b') is none }}|{{ missing|default('dflt') }}|"
            + "{% for x in missing %}never{% endfor %}|{{ 'a' in missing }}"
        expectSame(try render(source), "|False|0|x|False|True|dflt||False")
        #expect(throws: ChatTemplateError.runtime(message: "'missing' is undefined", line: 1, column: 12)) {
            try render("{{ missing.attr }}")
        }
        #expect(throws: ChatTemplateError.self) { try render("{{ missing + 'a' }}") }
        #expect(throws: ChatTemplateError.self) { try render("{{ 'x' + 1 }}") }
    }

    @Test func filtersOnSequences() throws {
        let source = "{{ [3,1,2]|sort|join(',') }} {{ ['b','A','a']|unique|list }} "
            + "{{ [{'n':'x','k':2},{'n':'y','k':1}]|sort(attribute='k')|map(attribute='n')|join }} "
            + "{{ [1,2,3]|select('odd')|list }} {{ [{'r':'a'},{'r':'b'}]|selectattr('r','equalto','b')|list }} "
            + "{{ {'b':1,'a':2}|dictsort }} {{ [1,2,3]|sum }} {{ ['a','b']|map('upper')|join }}"
        expectSame(try render(source), "1,2,3 ['b', 'A'] yx [1, 3] [{'r': 'b'}] [('a', 2), ('b', 1)] 6 AB")
        expectSame(try render(#"{{ "x" | int }} {{ "42" | int }} {{ 3.9 | int }} {{ "2.5" | float }} {{ 2.567 | round(2) }} {{ 2.5|round }} {{ -3|abs }} {{ "a\nb"|indent(2) }}|{{ "a\nb"|indent(2, true) }}"#),
                   "0 42 3 2.5 2.57 2.0 3 a\n  b|  a\n  b")
    }

    // MARK: - Errors

    @Test func raiseExceptionCarriesTheTemplatesMessage() {
        #expect(throws: ChatTemplateError.raised(message: "roles must alternate")) {
            try render("{% if true %}{{ raise_exception('roles must alternate') }}{% endif %}")
        }
    }

    @Test func unsupportedConstructsAreNamedWithTheirPosition() {
        #expect(throws: ChatTemplateError.unsupported(construct: "filter 'wordcount'", line: 3, column: 14)) {
            try ChatTemplate(source: "line1\n{{ x }}\n  {{ 'abc' | wordcount }}")
        }
        #expect(throws: ChatTemplateError.unsupported(construct: "tag 'macro'", line: 1, column: 4)) {
            try ChatTemplate(source: "{% macro f() %}x{% endmacro %}")
        }
        #expect(throws: ChatTemplateError.unsupported(construct: "str method 'format'", line: 1, column: 10)) {
            try render("{{ 'a{}'.format(1) }}")
        }
        let description = ChatTemplateError.unsupported(construct: "filter 'wordcount'", line: 3, column: 14).description
        #expect(description.contains("unsupported filter 'wordcount' at line 3, column 14"))
        #expect(description.contains("HINT"))
    }

    @Test func syntaxErrorsNameTheirPosition() {
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{% if x %}never closed") }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{{ 1 + }}") }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(source: "{% break %}") }
        do {
            _ = try ChatTemplate(source: "ok\n{% endfor %}")
            Issue.record("expected a syntax error")
        } catch let ChatTemplateError.syntax(_, line, column) {
            #expect(line == 2 && column == 4)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    // MARK: - Tools and tool calls through the real templates

    @Test func qwenRendersToolsAndToolCalls() throws {
        let record = try referenceTemplate("Qwen2.5-7B-Instruct")
        let text = try ChatTemplate(source: record.template).render(
            messages: toolConversation, addGenerationPrompt: true, bosToken: record.bos_token, eosToken: record.eos_token,
            extraVariables: ["tools": weatherTools])
        expectSame(text, json(#"<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather für a city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Zürich?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"units\": [\"C\", 1.5, null, true]}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 3}\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"#))
    }

    @Test func llama31RendersToolsWithIndentedJSON() throws {
        let record = try referenceTemplate("Llama-3.1-8B-Instruct")
        let text = try ChatTemplate(source: record.template).render(
            messages: toolConversation, addGenerationPrompt: true, bosToken: record.bos_token, eosToken: record.eos_token,
            extraVariables: ["tools": weatherTools])
        expectSame(text, json(#"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n        \"description\": \"Weather für a city\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": {\n                \"city\": {\n                    \"type\": \"string\"\n                }\n            },\n            \"required\": [\n                \"city\"\n            ]\n        }\n    }\n}\n\nWeather in Zürich?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Zürich\", \"units\": [\"C\", 1.5, null, true]}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"{\\\"temp\\\": 3}\"<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"sunny\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"#))
    }

    // MARK: - Speed

    @Test func rendersThousandsOfRecordsPerSecond() throws {
        let records = ChatTemplateCase.all.filter { $0.error == nil }
        try #require(!records.isEmpty)
        let prepared = try records.map { record in
            (try ChatTemplate(source: record.template), record,
             record.messages.map { ChatMessage(role: $0.role, content: $0.content) })
        }
        let rounds = 20
        let start = Date()
        for _ in 0..<rounds {
            for (template, record, messages) in prepared {
                _ = try template.render(messages: messages, addGenerationPrompt: record.add_generation_prompt,
                                        bosToken: record.bos_token, eosToken: record.eos_token)
            }
        }
        let perSecond = Double(rounds * prepared.count) / Date().timeIntervalSince(start)
        // Debug builds are several times slower than release; 1000/s is a floor, not a target.
        #expect(perSecond > 1000, "rendered \(Int(perSecond)) records/s")
    }
}
