import Foundation
import KilnQuant

/// `kiln quantize --report FILE.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched at
/// view time) with what the run made: per-layer SQNR and output ranges as charts, bit widths and fp32 islands,
/// per-block reconstruction losses, timings. Written as well-formed XHTML so that tools (and the tests) can parse it.
struct HTMLReport {
    let summary: QuantizeSummary
    /// Lines of provenance to show at the top (preprocessing, domain, kernels), label and value.
    let facts: [(String, String)]

    /// The page.
    var page: String {
        var body: [String] = []
        let kept = summary.blocks.filter(\.keptInitialization).count
        let islands = summary.layers.filter { $0.activationBits == nil }.count
        body.append("<h1>Kiln quantization report</h1>")
        body.append("<p class=\"lead\">\(escape(summary.teacher)) → \(escape(summary.student)): \(escape(summary.bits))"
                    + (summary.reconstruction ? ", block reconstruction" : "") + "</p>")
        var rows: [(String, String)] = [
            ("calibration", "\(summary.calibrationImages) images from \(summary.calibration)"),
            ("range method", summary.range),
            ("input quantized over", String(format: "[%.4g, %.4g]", summary.inputRange[0], summary.inputRange[1])
                + (summary.inputDomainAssumed.map { " (assumed: \($0))" } ?? "")),
            ("BatchNorms folded", "\(summary.foldedBatchNorms)"),
            ("layers", "\(summary.layers.count), of which \(islands) fp32 island op(s)"),
            ("synthesis", String(format: "%.1f s", summary.synthesisSeconds)),
            ("total", String(format: "%.1f s", summary.seconds)),
        ]
        rows += facts
        body.append("<table class=\"facts\">" + rows.map { "<tr><th>\(escape($0.0))</th><td>\(escape($0.1))</td></tr>" }.joined() + "</table>")
        body.append("<h2>Per-layer SQNR</h2>")
        body.append("<p>Signal-to-quantization-noise ratio of each layer's int8 output against the fp32 teacher on the calibration images (higher is better). Bars are colored by the layer's weight bits (activation bits for layers without weights): <span style=\"color:#1f77b4\">8</span>, <span style=\"color:#bcbd22\">5–7</span>, <span style=\"color:#ff7f0e\">3–4</span>, <span style=\"color:#d62728\">2</span>; fp32 islands <span style=\"color:#9e9e9e\">grey</span>.</p>")
        body.append(sqnrChart)
        body.append("<h2>Per-layer output ranges</h2>")
        body.append("<p>The real range each quantized output covers: [(0 − zero point) · scale, (max level − zero point) · scale].</p>")
        body.append(rangeChart)
        if !summary.blocks.isEmpty {
            body.append("<h2>Block reconstruction</h2>")
            body.append("<p>Output MSE of each block against the teacher before and after reconstruction (log scale). \(kept) of \(summary.blocks.count) blocks kept their initialisation.</p>")
            body.append(blockChart)
            body.append(blockTable)
        }
        body.append("<h2>Layers</h2>")
        body.append(layerTable)
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <!DOCTYPE html>
            <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
            <head><meta charset="utf-8"/><title>Kiln report: \(escape(summary.student))</title>
            <style>\(Self.style)</style></head>
            <body>
            \(body.joined(separator: "\n"))
            </body>
            </html>

            """
    }

    static let style = """
        body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}h1{margin-bottom:0}.lead{font-size:1.2em;margin-top:.3em}\
        table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd;font-size:13px}\
        td.n{text-align:right;font-variant-numeric:tabular-nums}.facts th{color:#555;font-weight:normal}svg{display:block;margin:1em 0}\
        svg text{font-size:11px;fill:#333}.island{color:#888}
        """

    /// Fill color by weight bits (by activation bits for layers without weights; fp32 islands grey).
    static func color(_ layer: LayerReport) -> String {
        guard let activationBits = layer.activationBits else { return "#9e9e9e" }
        switch layer.weightBits ?? activationBits {
        case ...2: return "#d62728"
        case 3...4: return "#ff7f0e"
        case 5...7: return "#bcbd22"
        default: return "#1f77b4"
        }
    }

    /// One horizontal bar per layer: SQNR in dB.
    var sqnrChart: String {
        let layers = summary.layers
        let top = max(10, (layers.compactMap(\.sqnr).map { min($0, 80) }.max() ?? 40).rounded(.up))
        return barChart(rows: layers.map { layer in
            let value = layer.sqnr.map { min($0, 80) }
            let label = layer.sqnr.map { String(format: "%.1f dB", $0) } ?? (layer.activationBits == nil ? "fp32" : "-")
            return (layer.layer, 0, value ?? 0, label, Self.color(layer))
        }, low: 0, high: top, unit: "dB", id: "sqnr")
    }

    /// One bar per quantized layer from the low to the high end of its output range.
    var rangeChart: String {
        let ranged = summary.layers.compactMap { layer in layer.outputRange.map { (layer, $0) } }
        let low = min(0, ranged.map(\.1.lowerBound).min() ?? 0), high = max(1, ranged.map(\.1.upperBound).max() ?? 1)
        return barChart(rows: ranged.map { layer, range in
            (layer.layer, Double(range.lowerBound), Double(range.upperBound),
             String(format: "[%.3g, %.3g]", range.lowerBound, range.upperBound), Self.color(layer))
        }, low: Double(low), high: Double(high), unit: "", id: "ranges")
    }

    /// Loss before and after reconstruction per block, two bars each on a log scale.
    var blockChart: String {
        let values = summary.blocks.flatMap { [$0.lossBefore, $0.lossAfter] }.filter { $0 > 0 && $0.isFinite }.map(Double.init)
        let low = log10(values.min() ?? 1e-6).rounded(.down), high = max(low + 1, log10(values.max() ?? 1).rounded(.up))
        func position(_ loss: Float) -> Double { loss > 0 && loss.isFinite ? log10(Double(loss)) : low }
        return barChart(rows: summary.blocks.flatMap { block in [
            (block.block + " before", low, position(block.lossBefore), String(format: "%.4g", block.lossBefore), "#ff7f0e"),
            (block.block + " after", low, position(block.lossAfter), String(format: "%.4g", block.lossAfter),
             block.keptInitialization ? "#9e9e9e" : "#2ca02c"),
        ] }, low: low, high: high, unit: "log10", id: "blocks")
    }

    /// A horizontal bar chart: per row a label, a bar from `from` to `to` on the [low, high] axis, a value label.
    func barChart(rows: [(label: String, from: Double, to: Double, value: String, color: String)], low: Double, high: Double,
                  unit: String, id: String) -> String {
        let labelWidth = 260.0, plotWidth = 700.0, valueWidth = 120.0, rowHeight = 14.0, top = 24.0
        let height = top + Double(rows.count) * rowHeight + 8
        func x(_ v: Double) -> Double { labelWidth + (min(max(v, low), high) - low) / (high - low) * plotWidth }
        let width = Int(labelWidth + plotWidth + valueWidth)
        var parts = ["<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"\(id)\" width=\"\(width)\" height=\"\(Int(height))\" role=\"img\">"]
        for tick in 0...4 {
            let v = low + (high - low) * Double(tick) / 4
            parts.append(String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", x(v), top - 4, x(v), height - 6))
            let tickLabel: String = String(format: "%.3g", v) + (unit.isEmpty ? "" : " " + unit)
            parts.append(String(format: "<text x=\"%.1f\" y=\"14\" text-anchor=\"middle\">%@</text>", x(v), escape(tickLabel)))
        }
        for (i, row) in rows.enumerated() {
            let y = top + Double(i) * rowHeight
            let (a, b) = (x(min(row.from, row.to)), x(max(row.from, row.to)))
            parts.append(String(format: "<text class=\"label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%@</text>", labelWidth - 6, y + 10, escape(shortened(row.label))))
            parts.append(String(format: "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"/>", a, y + 2, max(b - a, 1), rowHeight - 4, row.color))
            parts.append(String(format: "<text x=\"%.1f\" y=\"%.1f\">%@</text>", labelWidth + plotWidth + 6, y + 10, escape(row.value)))
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }

    var layerTable: String {
        func number(_ v: Float?) -> String { v.map { String(format: "%.3g", $0) } ?? "–" }
        let header = "<tr><th>layer</th><th>op</th><th>weight bits</th><th>weight scales</th><th>act bits</th><th>act scale (zp)</th><th>range</th><th>SQNR dB</th></tr>"
        let rows = summary.layers.map { l -> String in
            let range: String = l.outputRange.map { String(format: "[%.3g, %.3g]", $0.lowerBound, $0.upperBound) } ?? "–"
            let weightBits: String = l.weightBits.map { "\($0)" } ?? "–"
            let scales: String = l.weightScaleMin.map { "\(number($0))–\(number(l.weightScaleMax))" } ?? "–"
            let activationBits: String = l.activationBits.map { "\($0)" } ?? "fp32 island"
            let activation: String = l.activationBits == nil ? "–" : "\(number(l.activationScale)) (\(l.zeroPoint))"
            let sqnr: String = l.sqnr.map { String(format: "%.1f", $0) } ?? "–"
            let cells: [String] = [l.layer, l.op, weightBits, scales, activationBits, activation, range, sqnr]
            let opening = l.activationBits == nil ? "<tr class=\"island\">" : "<tr>"
            return opening + cells.enumerated().map { i, c in "<td\(i >= 2 ? " class=\"n\"" : "")>\(escape(c))</td>" }.joined() + "</tr>"
        }
        return "<table class=\"layers\">\(header)\(rows.joined())</table>"
    }

    var blockTable: String {
        let header = "<tr><th>block</th><th>nodes</th><th>loss before</th><th>loss after</th><th>reconstructed</th><th>seconds</th><th></th></tr>"
        let rows = summary.blocks.map { b in
            let cells = [b.block, "\(b.nodes)", String(format: "%.5g", b.lossBefore), String(format: "%.5g", b.lossAfter),
                         String(format: "%.5g", b.lossReconstructed), String(format: "%.1f", b.seconds),
                         b.keptInitialization ? "kept initialisation" : ""]
            return "<tr>" + cells.enumerated().map { i, c in "<td\(i >= 1 && i <= 5 ? " class=\"n\"" : "")>\(escape(c))</td>" }.joined() + "</tr>"
        }
        return "<table class=\"blocks\">\(header)\(rows.joined())</table>"
    }

    func shortened(_ name: String) -> String { name.count > 40 ? "…" + name.suffix(39) : name }

    /// Text made safe for XHTML.
    func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
