import Testing
@testable import DTrainCore
@Test func corePlaceholder() { #expect(Bool(true)) }
