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

// The rules NormalizeMessage applies, as one regular expression of alternatives so that a
// pass reads the text once; at each position the leftmost alternative that matches wins.
// Placeholders are letters in angle brackets: no rule matches one, which keeps normalising
// idempotent.
var messageRules = []struct {
	re   string
	with string
	// keepFirst: the match starts with the character before the value (a space, a bracket),
	// which stays.
	keepFirst bool
}{
	// URLs, up to a space or a quote (so that the quote rules keep their pairs).
	{`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'` + "`" + `]+`, "<url>", false},
	// Quoted values: "...", `...`, and '...' where the quote opens a word (not the
	// apostrophe of "can't").
	{`"[^"]*"`, `"<str>"`, false},
	{"`[^`]*`", "`<str>`", false},
	{`'[^']*'`, `'<str>'`, false}, // at the start of the text
	{`[\s(\[{=:,]'[^']*'`, `'<str>'`, true},
	// UUIDs and ULIDs (report IDs, request IDs).
	{`\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b`, "<uuid>", false},
	{`\b[0-7][0-9A-HJKMNP-TV-Z]{25}\b`, "<ulid>", false},
	// File paths: absolute, home- or dot-relative, Windows, or relative with two slashes.
	{`(?:~|\.{1,2})?/[\w.\-+@][\w.\-+@/]*`, "<path>", false}, // at the start of the text
	{`[\s(\[{=:,](?:~|\.{1,2})?/[\w.\-+@][\w.\-+@/]*`, "<path>", true},
	{`\b[A-Za-z]:\\[\w.\-+@\\]*`, "<path>", false},
	{`[\w.\-+@]+/[\w.\-+@]+/[\w.\-+@/]*`, "<path>", false},
	// Addresses and long hex strings (pointers, digests, goroutine frames).
	{`\b0[xX][0-9A-Fa-f]+\b`, "<addr>", false},
	{`\b[0-9A-Fa-f]{8,}\b`, "<hex>", false},
	// Numbers, with decimals and version dots: counts, sizes, ports, times, versions.
	{`[0-9]+(?:[.:][0-9]+)*`, "<n>", false},
}

// messageRE is messageRules as one expression, alternative i in group i+1. The rules
// "at the start of the text" are anchored there.
var messageRE = func() *regexp.Regexp {
	alts := make([]string, len(messageRules))
	for i, r := range messageRules {
		re := r.re
		if i == 3 || i == 7 {
			re = "^" + re
		}
		alts[i] = "(" + re + ")"
	}
	return regexp.MustCompile(strings.Join(alts, "|"))
}()

// replaceOnce applies every rule in one pass over s.
func replaceOnce(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range messageRE.FindAllStringSubmatchIndex(s, -1) {
		b.WriteString(s[last:m[0]])
		for i, r := range messageRules {
			if m[2+2*i] < 0 {
				continue
			}
			if r.keepFirst {
				_, size := utf8.DecodeRuneInString(s[m[0]:])
				b.WriteString(s[m[0] : m[0]+size])
			}
			b.WriteString(r.with)
			break
		}
		last = m[1]
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// NormalizeMessage returns the message with what varies between occurrences of one defect
// replaced by placeholders (<n>, <addr>, <hex>, <uuid>, <ulid>, <path>, <url>, "<str>"),
// whitespace collapsed to single spaces, at most MaxSignatureMessageBytes, valid UTF-8.
func NormalizeMessage(s string) string {
	// Bound the work whatever the caller passes: only the start of a message is part of
	// its signature (a normalised message is never longer than this, so the clip leaves one
	// as it is). The worst 512 bytes cost about 10 ms on one core (FuzzSignature's seeds).
	s = clipBytes(strings.ToValidUTF8(s, "\uFFFD"), MaxSignatureMessageBytes)
	// Whitespace first: a newline never separates what the rules would otherwise join
	// (quotes on two lines).
	s = strings.Join(strings.Fields(s), " ")
	// A replacement can make a match where there was none (a word boundary where a digit
	// was, the end of the text where it was clipped), so apply the rules until nothing
	// changes. Each pass that changes something replaces text that is not a placeholder,
	// of which there is less every pass, so this ends; the bound is a backstop.
	for range maxNormalizePasses {
		next := strings.TrimRight(clipBytes(replaceOnce(s), MaxSignatureMessageBytes), " ")
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
