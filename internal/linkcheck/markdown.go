package linkcheck

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// link is a link or image destination found in a Markdown file.
type link struct {
	line   int    // 1-based line of the destination
	target string // the destination as written, e.g. "../docs/x.md#y"
}

// document is what the checker needs of one Markdown file: its links and
// the anchors its headings (and explicit HTML anchors) define.
type document struct {
	links   []link
	anchors map[string]bool
}

var (
	fenceOpen  = regexp.MustCompile("^ *(`{3,}|~{3,})")
	atxHeading = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$`)
	atxClosing = regexp.MustCompile(`(?:^|[ \t]+)#+[ \t]*$`)
	setextLine = regexp.MustCompile(`^ {0,3}(?:=+|-+)[ \t]*$`)
	refDef     = regexp.MustCompile(`^ {0,3}\[([^\]^][^\]]*)\]:[ \t]*(<[^>]*>|\S+)`)
	listItem   = regexp.MustCompile(`^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)`)
	htmlAnchor = regexp.MustCompile(`<a\s[^>]*?\b(?:name|id)\s*=\s*["']([^"']+)["']`)
	inlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	htmlTag    = regexp.MustCompile(`</?[A-Za-z][^>]*>`)
)

// parse reads a Markdown file's links and anchors. Text inside fenced code
// blocks and code spans is neither a link nor a heading.
func parse(text string) document {
	doc := document{anchors: make(map[string]bool)}
	slugs := newSlugger()
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")

	var fence string       // the open fence's marker, "" outside a fenced block
	var paragraph []string // the lines of the current block of text
	var paragraphStart int // the 0-based line where it starts
	flush := func() {
		if len(paragraph) > 0 {
			doc.links = append(doc.links, inlineLinks(paragraph, paragraphStart)...)
		}
		paragraph = nil
	}
	for i, line := range lines {
		if fence != "" {
			trimmed := strings.TrimLeft(line, " ")
			if strings.HasPrefix(trimmed, fence) && strings.TrimRight(strings.TrimLeft(trimmed, fence[:1]), " \t") == "" {
				fence = ""
			}
			continue
		}
		if m := fenceOpen.FindStringSubmatch(line); m != nil && !(m[1][0] == '`' && strings.Contains(line[len(m[0]):], "`")) {
			flush()
			fence = m[1]
			continue
		}
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if m := refDef.FindStringSubmatch(line); m != nil {
			flush()
			doc.links = append(doc.links, link{line: i + 1, target: strings.Trim(m[2], "<>")})
			continue
		}
		if m := atxHeading.FindStringSubmatch(line); m != nil {
			flush()
			doc.anchors[slugs.slug(headingText(atxClosing.ReplaceAllString(m[2], "")))] = true
			doc.links = append(doc.links, inlineLinks([]string{line}, i)...)
			continue
		}
		if setextLine.MatchString(line) && len(paragraph) > 0 && !listItem.MatchString(paragraph[0]) && !strings.HasPrefix(strings.TrimSpace(paragraph[0]), "|") {
			doc.anchors[slugs.slug(headingText(strings.Join(paragraph, " ")))] = true
			flush()
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			doc.anchors[m[1]] = true
		}
		if len(paragraph) == 0 {
			paragraphStart = i
		}
		paragraph = append(paragraph, line)
	}
	flush()
	return doc
}

// inlineLinks finds the inline link and image destinations, `[text](dest)`
// and `![alt](dest)`, in a block of lines that starts at line first
// (0-based), outside code spans.
func inlineLinks(block []string, first int) []link {
	text := blankCodeSpans(strings.Join(block, "\n"))
	var links []link
	for i := 0; i+1 < len(text); i++ {
		if text[i] != ']' || text[i+1] != '(' || (i > 0 && text[i-1] == '\\') {
			continue
		}
		start := i + 2
		for start < len(text) && (text[start] == ' ' || text[start] == '\t' || text[start] == '\n') {
			start++
		}
		target, ok := destination(text[start:])
		if !ok || target == "" {
			continue
		}
		links = append(links, link{line: first + 1 + strings.Count(text[:start], "\n"), target: target})
	}
	return links
}

// destination reads a link destination at the start of s: `<...>`, or up
// to the first space or the parenthesis that closes the link.
func destination(s string) (string, bool) {
	if strings.HasPrefix(s, "<") {
		end := strings.IndexAny(s, ">\n")
		if end < 0 || s[end] != '>' {
			return "", false
		}
		return s[1:end], true
	}
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
		case c == '(':
			depth++
		case c == ')' && depth == 0:
			return s[:i], true
		case c == ')':
			depth--
		case c == ' ' || c == '\t' || c == '\n':
			return s[:i], true
		}
	}
	return "", false
}

// blankCodeSpans replaces every code span (`x`, “ x “, …) with spaces,
// keeping newlines, so that nothing inside it is taken for a link and line
// numbers stay right. An unmatched backtick run is literal text.
func blankCodeSpans(text string) string {
	b := []byte(text)
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		run := 1
		for i+run < len(b) && b[i+run] == '`' {
			run++
		}
		end := closingRun(b, i+run, run)
		if end < 0 {
			i += run
			continue
		}
		for j := i; j < end+run; j++ {
			if b[j] != '\n' {
				b[j] = ' '
			}
		}
		i = end + run
	}
	return string(b)
}

// closingRun finds a backtick run of exactly n at or after from.
func closingRun(b []byte, from, n int) int {
	for i := from; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		run := 1
		for i+run < len(b) && b[i+run] == '`' {
			run++
		}
		if run == n {
			return i
		}
		i += run
	}
	return -1
}

// headingText is a heading's text as GitHub renders it: code spans keep
// their content, links and images keep their text, HTML tags and emphasis
// markers go.
func headingText(raw string) string {
	raw = inlineLink.ReplaceAllString(raw, "$1")
	var out strings.Builder
	for i := 0; i < len(raw); {
		if raw[i] != '`' {
			j := strings.IndexByte(raw[i:], '`')
			if j < 0 {
				j = len(raw) - i
			}
			out.WriteString(stripInline(raw[i : i+j]))
			i += j
			continue
		}
		run := 1
		for i+run < len(raw) && raw[i+run] == '`' {
			run++
		}
		end := closingRun([]byte(raw), i+run, run)
		if end < 0 {
			out.WriteString(raw[i : i+run])
			i += run
			continue
		}
		out.WriteString(strings.TrimSpace(raw[i+run : end]))
		i = end + run
	}
	return out.String()
}

// stripInline removes the markup of text outside code spans.
func stripInline(s string) string {
	s = htmlTag.ReplaceAllString(s, "")
	s = strings.ReplaceAll(s, `\`, "")
	// Underscores that open or close emphasis go; those inside a word
	// (snake_case) stay, as GitHub keeps them.
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' {
			start := i
			for i+1 < len(s) && s[i+1] == '_' {
				i++
			}
			before := start == 0 || !isWordByte(s[start-1])
			after := i+1 == len(s) || !isWordByte(s[i+1])
			if before || after {
				continue
			}
			out.WriteString(s[start : i+1])
			continue
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

func isWordByte(c byte) bool {
	return c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Slug returns the anchor GitHub gives a heading with this text (the first
// one; see slugger for duplicates): lower case, every character that is not
// a letter, a digit, a mark, '-', '_' or a space removed, and each space
// turned into '-'.
func Slug(text string) string {
	var out strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text)) {
		switch {
		case r == ' ':
			out.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			out.WriteRune(r)
		}
	}
	return out.String()
}

// slugger numbers repeated headings as GitHub does: the second "Usage" is
// "usage-1", the third "usage-2".
type slugger struct{ seen map[string]int }

func newSlugger() *slugger { return &slugger{seen: make(map[string]int)} }

func (s *slugger) slug(text string) string {
	base := Slug(text)
	slug := base
	for {
		if _, taken := s.seen[slug]; !taken {
			break
		}
		s.seen[base]++
		slug = fmt.Sprintf("%s-%d", base, s.seen[base])
	}
	s.seen[slug] = 0
	return slug
}
