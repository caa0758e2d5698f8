import Testing
@testable import DTrainData
@Test func placeholder() { #expect(Bool(true)) }
