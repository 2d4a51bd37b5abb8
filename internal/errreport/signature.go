package errreport

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Issues group reports that fail the same way. A report's signature is what stays the same
// when the same defect fires on another device, another day or another version: its kind,
// the image's name without the version, how a crash ended (exit code or signal), its code,
// the update step and the name of the target being installed, the capability denied, and
// its message with the parts that vary from one occurrence to the next (numbers,
// addresses, IDs, paths, quoted values, URLs) replaced by placeholders. Two reports with
// one signature are one issue; IssueID names it.
//
// The signature is text made only of the report's validated fields; it is never parsed
// back. Its message part is at most MaxSignatureMessageBytes, and normalising a normalised
// message changes nothing (FuzzSignature).

// MaxSignatureMessageBytes bounds the normalised message in a signature.
const MaxSignatureMessageBytes = 512

// IssueIDPrefix starts every issue ID.
const IssueIDPrefix = "iss_"

var issueIDRE = regexp.MustCompile(`^iss_[0-9a-f]{20}$`)

// ValidIssueID reports whether s is an issue ID as IssueID makes them.
func ValidIssueID(s string) bool { return issueIDRE.MatchString(s) }

// IssueID names the issue of a signature: "iss_" and the first 20 hex digits (80 bits) of
// the signature's SHA-256, the same on every server and in every release that keeps the
// signature rules.
func IssueID(signature string) string {
	sum := sha256.Sum256([]byte(signature))
	return IssueIDPrefix + hex.EncodeToString(sum[:10])
}

// ImageName returns an image path without its version: apps/<name>/<version> becomes
// apps/<name>. A path without a version is returned as it is.
func ImageName(path string) string {
	if strings.Count(path, "/") < 2 {
		return path
	}
	return path[:strings.LastIndexByte(path, '/')]
}

// Signature returns the report's signature: one "key=value" line per field that is set,
// in a fixed order, the message last and normalised (NormalizeMessage). No value holds a
// newline (the message's whitespace is collapsed; the other fields are validated tokens),
// so the lines cannot be confused.
func Signature(r Report) string {
	var b strings.Builder
	line := func(key, value string) {
		if value == "" {
			return
		}
		b.WriteString(key)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
	}
	line("kind", oneLine(string(r.Kind)))
	line("image", oneLine(ImageName(r.ImagePath)))
	if r.ExitCode != nil {
		line("exit", strconv.Itoa(*r.ExitCode))
	}
	line("signal", oneLine(r.Signal))
	line("code", oneLine(r.Code))
	line("step", oneLine(string(r.Step)))
	line("target", oneLine(ImageName(r.Target)))
	line("capability", oneLine(r.Capability))
	line("message", NormalizeMessage(r.Message))
	return strings.TrimSuffix(b.String(), "\n")
}

// oneLine keeps a field that Validate would refuse (Signature is called on stored, valid
// reports, but must not be confused by anything) from adding lines of its own.
func oneLine(s string) string {
	if len(s) > MaxPathBytes {
		s = clipBytes(s, MaxPathBytes)
	}
	return strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
}

// The rules NormalizeMessage applies, in order. Placeholders are letters in angle
// brackets: no rule matches one, which keeps normalising idempotent.
var messageRules = []struct {
	re   *regexp.Regexp
	with string
}{
	// URLs, up to a space or a quote (so that the quote rule below keeps its pairs).
	{regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'` + "`" + `]+`), "<url>"},
	// Quoted values: "...", `...`, and '...' where the quote opens a word (not the
	// apostrophe of "can't").
	{regexp.MustCompile(`"[^"]*"`), `"<str>"`},
	{regexp.MustCompile("`[^`]*`"), "`<str>`"},
	{regexp.MustCompile(`(^|[\s(\[{=:,])'[^']*'`), `$1'<str>'`},
	// UUIDs and ULIDs (report IDs, request IDs).
	{regexp.MustCompile(`\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b`), "<uuid>"},
	{regexp.MustCompile(`\b[0-7][0-9A-HJKMNP-TV-Z]{25}\b`), "<ulid>"},
	// File paths: absolute, home- or dot-relative, Windows, or relative with two slashes.
	{regexp.MustCompile(`(^|[\s(\[{=:,])(?:~|\.{1,2})?/[\w.\-+@][\w.\-+@/]*`), "$1<path>"},
	{regexp.MustCompile(`\b[A-Za-z]:\\[\w.\-+@\\]*`), "<path>"},
	{regexp.MustCompile(`[\w.\-+@]+/[\w.\-+@]+/[\w.\-+@/]*`), "<path>"},
	// Addresses and long hex strings (pointers, digests, goroutine frames).
	{regexp.MustCompile(`\b0[xX][0-9A-Fa-f]+\b`), "<addr>"},
	{regexp.MustCompile(`\b[0-9A-Fa-f]{8,}\b`), "<hex>"},
	// Numbers, with decimals and version dots: counts, sizes, ports, times, versions.
	{regexp.MustCompile(`[0-9]+(?:[.:][0-9]+)*`), "<n>"},
}

// NormalizeMessage returns the message with what varies between occurrences of one defect
// replaced by placeholders (<n>, <addr>, <hex>, <uuid>, <ulid>, <path>, <url>, "<str>"),
// whitespace collapsed to single spaces, at most MaxSignatureMessageBytes, valid UTF-8.
func NormalizeMessage(s string) string {
	// Bound the work whatever the caller passes; a valid message is at most this long.
	s = clipBytes(strings.ToValidUTF8(s, "\uFFFD"), MaxMessageBytes)
	// Whitespace first: a newline never separates what the rules would otherwise join
	// (quotes on two lines).
	s = strings.Join(strings.Fields(s), " ")
	// A replacement can make a match where there was none (a word boundary where a digit
	// was, the end of the text where it was clipped), so apply the rules until nothing
	// changes. Each pass that changes something replaces text that is not a placeholder,
	// of which there is less every pass, so this ends; the bound is a backstop.
	for range maxNormalizePasses {
		next := s
		for _, r := range messageRules {
			next = r.re.ReplaceAllString(next, r.with)
		}
		next = strings.TrimRight(clipBytes(next, MaxSignatureMessageBytes), " ")
		if next == s {
			break
		}
		s = next
	}
	return s
}

// maxNormalizePasses bounds NormalizeMessage's passes; FuzzSignature finds none that need
// more than a few.
const maxNormalizePasses = 8

// clipBytes cuts s to at most n bytes at a character boundary.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
