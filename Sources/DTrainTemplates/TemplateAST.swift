/// A literal written in the template.
enum Constant: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

/// Positional and keyword arguments of a call, filter or test.
struct CallArguments: Sendable {
    var positional: [Expr] = []
    var keyword: [(name: String, value: Expr)] = []
}

/// `value | name(arguments)`, with the filter resolved when the template is parsed.
struct FilterCall: Sendable {
    var filter: FilterKind
    var arguments: CallArguments
    var location: SourceLocation
}

/// `value is [not] name arguments`, with the test resolved when the template is parsed.
struct TestCall: Sendable {
    var test: TestKind
    var arguments: [Expr]
    var negated: Bool
    var location: SourceLocation
}

enum UnaryOperator: Sendable { case negate, plus }

enum BinaryOperator: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", floorDivide = "//", modulo = "%", power = "**"
}

enum CompareOperator: String, Sendable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    case contains = "in", notContains = "not in"
}

/// An expression, with operator precedence already resolved (jinja2's grammar, lowest first:
/// `a if c else b`, `or`, `and`, `not`, comparisons and `in`, `+ -`, `~`, `* / // %`, `**`,
/// unary `- +`, then postfix `.attr`, `[index]`, `(call)`, `| filter`, `is test`).
indirect enum Expr: Sendable {
    case constant(Constant)
    case name(String, SourceLocation)
    case list([Expr])
    case tuple([Expr])
    case dict([(key: Expr, value: Expr)], SourceLocation)
    /// `object.name`: attribute first, then key (jinja2's `getattr`).
    case attribute(Expr, String, SourceLocation)
    /// `object[key]`: key first, then attribute (jinja2's `getitem`).
    case item(Expr, Expr, SourceLocation)
    case slice(Expr, start: Expr?, stop: Expr?, step: Expr?, SourceLocation)
    case call(Expr, CallArguments, SourceLocation)
    case filter(Expr, FilterCall)
    case test(Expr, TestCall)
    case unary(UnaryOperator, Expr, SourceLocation)
    case binary(BinaryOperator, Expr, Expr, SourceLocation)
    /// `a ~ b ~ c`: every operand converted with `str` and joined.
    case concat([Expr])
    case and(Expr, Expr)
    case or(Expr, Expr)
    case not(Expr)
    /// A (possibly chained, as in Python) comparison `a < b <= c`.
    case compare(Expr, [(op: CompareOperator, operand: Expr)], SourceLocation)
    /// `then if test else otherwise`; without `else` the false branch is undefined.
    case conditional(test: Expr, then: Expr, otherwise: Expr?)
}

/// Where `set` and `for` store values.
indirect enum AssignTarget: Sendable {
    case name(String)
    case tuple([AssignTarget])
    /// `ns.attribute` where `ns` is a `namespace()` object.
    case namespaceAttribute(String, String)
}

struct ForLoop: Sendable {
    var target: AssignTarget
    var iterable: Expr
    /// `{% for x in xs if condition %}`: items failing it are skipped and not counted in `loop`.
    var condition: Expr?
    var body: [Statement]
    /// Rendered when the loop ran zero times.
    var otherwise: [Statement]
    var location: SourceLocation
}

/// A template statement.
indirect enum Statement: Sendable {
    case text(String)
    /// `{{ expression }}`: the value converted with Python's `str` (undefined renders as "").
    case output(Expr)
    case conditional(branches: [(test: Expr, body: [Statement])], otherwise: [Statement])
    case forLoop(ForLoop)
    case assign(AssignTarget, Expr, SourceLocation)
    /// `{% set x | filters %}body{% endset %}`.
    case assignBlock(AssignTarget, [FilterCall], [Statement], SourceLocation)
    case loopBreak
    case loopContinue
}
