"""The build report: report.md for CI job summaries, report.html to read first, and their plots.

``views`` says what became of each artifact and words its figures and verdicts; ``tables`` lays them out once
for both documents; ``plots`` draws with matplotlib (SVG inline in the HTML, PNG beside the Markdown).
"""
