import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

@Suite("kiln quantize --report: one self-contained HTML page")
struct ReportTests {
    /// Quantizes the committed ResNet-20 from 32 Fashion-MNIST test images with a report; returns the page parsed
    /// as XML and the run's JSON summary.
    func report(_ extra: [String]) throws -> (page: XMLDocument, size: Int, summary: [String: Any]) {
        let folder = CLI.temporary("report-images-\(extra.joined())"), page = CLI.temporary("report-\(extra.joined()).html")
        let student = CLI.temporary("report-\(extra.joined()).kiln")
        defer { for path in [folder, page, student] { try? FileManager.default.removeItem(atPath: path) } }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let data = try FashionMNIST(split: .test)
        for i in 0..<32 {
            try PNGWriter.write(PixelImage(width: 28, height: 28, channels: 1, pixels: Array(data.images[(i * 784)..<((i + 1) * 784)])),
                                to: "\(folder)/\(i).png")
        }
        let run = try CLI.run(["quantize", CLI.teacher, "--calibration", folder, "--report", page, "-o", student, "--json"] + extra)
        try #require(run.status == 0, "\(run.stderr)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: page))
        let summary = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as! [String: Any]
        return (try XMLDocument(data: bytes, options: []), bytes.count, summary)
    }

    func nodes(_ page: XMLDocument, _ xpath: String) throws -> [XMLNode] { try page.nodes(forXPath: xpath) }

    @Test("a W8A8 student's page: a bar per layer in the SQNR chart, ranges, the layer table, nothing fetched")
    func plain() throws {
        let (page, size, summary) = try report([])
        let layers = try #require(summary["layers"] as? [[String: Any]])
        #expect(try nodes(page, "//*[local-name()='svg']/@id").map(\.stringValue) == ["sqnr", "ranges"])
        #expect(try nodes(page, "//*[local-name()='svg'][@id='sqnr']/*[local-name()='rect']").count == layers.count)
        let tableRows = try nodes(page, "//*[local-name()='table'][@class='layers']/*[local-name()='tr']")
        #expect(tableRows.count == layers.count + 1)
        let text = page.rootElement()?.stringValue ?? ""
        for layer in layers { #expect(text.contains(layer["layer"] as! String)) }
        // Self-contained: no scripts, no links or sources other than the XML namespaces.
        #expect(try nodes(page, "//*[local-name()='script' or local-name()='link' or local-name()='img' or @src or @href]").isEmpty)
        #expect(size < 1_000_000, "\(size) bytes")
    }

    @Test("a W4A4 student's page adds each block's losses before and after reconstruction and the layers' bit widths")
    func distilled() throws {
        let (page, _, summary) = try report(["--bits", "w4a4", "--iterations-per-block", "5"])
        let blocks = try #require(summary["blocks"] as? [[String: Any]])
        #expect(!blocks.isEmpty)
        #expect(try nodes(page, "//*[local-name()='svg'][@id='blocks']/*[local-name()='rect']").count == 2 * blocks.count)
        #expect(try nodes(page, "//*[local-name()='table'][@class='blocks']/*[local-name()='tr']").count == blocks.count + 1)
        // First and last layers stay 8-bit, the rest have 4-bit weights.
        let layers = try #require(summary["layers"] as? [[String: Any]])
        let weightBits = layers.compactMap { $0["weightBits"] as? Int }
        #expect(weightBits.first == 8 && weightBits.last == 8 && weightBits.contains(4), "\(weightBits)")
    }
}
