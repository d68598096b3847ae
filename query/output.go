package query

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// apiError is the body of every error answer.
type apiError struct {
	Error struct {
		Status    int    `json:"status"`
		Code      string `json:"code"`                // bad_parameter, unauthorized, forbidden, not_found, method_not_allowed, unavailable, internal
		Parameter string `json:"parameter,omitempty"` // the parameter at fault (bad_parameter)
		Message   string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, param, msg string) {
	var e apiError
	e.Error.Status, e.Error.Code, e.Error.Parameter, e.Error.Message = status, code, param, msg
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only our own types are encoded; this cannot happen.
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"status":500,"code":"internal","message":"internal error"}}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// csvTable is a CSV answer: a header and rows of cells.
type csvTable struct {
	header []string
	rows   [][]string
}

func (t *csvTable) add(cells ...string) { t.rows = append(t.rows, cells) }

func writeCSV(w http.ResponseWriter, name string, t *csvTable) {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	cw.Write(t.header)
	for _, r := range t.rows {
		cw.Write(r)
	}
	cw.Flush()
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
}

// cell makes a text value from the data (a server name, an entry id) safe
// for spreadsheets: a value that a spreadsheet could run as a formula gets
// a leading apostrophe. That is one that starts with a tab, CR or LF, or
// whose first character after any leading white space (an import may trim
// it) is = + - @ or one of their full-width forms, which some spreadsheets
// take for the ASCII ones.
func cell(s string) string {
	if s == "" {
		return s
	}
	first, _ := utf8.DecodeRuneInString(strings.TrimLeftFunc(s, unicode.IsSpace))
	if strings.ContainsRune("\t\r\n", rune(s[0])) || strings.ContainsRune("=+-@＝＋－＠", first) {
		return "'" + s
	}
	return s
}
