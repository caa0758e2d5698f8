import Testing
@testable import DTrainIO
@Test func ioPlaceholder() { #expect(Bool(true)) }
