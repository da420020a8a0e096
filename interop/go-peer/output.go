package main

// Everything the peer reports goes to stdout as one JSON object per line, so
// tests read events with a line reader: the first line is {"event":"ready"}.

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

var outMu sync.Mutex

// emit writes one event line; fields are merged into {"event": name}.
func emit(event string, fields map[string]any) {
	m := map[string]any{"event": event}
	for k, v := range fields {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// fatal reports a setup failure as an event and exits non-zero.
func fatal(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	emit("fatal", map[string]any{"error": msg})
	fmt.Fprintln(os.Stderr, "go-peer:", msg)
	os.Exit(1)
}
