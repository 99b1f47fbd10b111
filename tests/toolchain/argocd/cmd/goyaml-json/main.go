// Command goyaml-json reads YAML (one or more documents) on stdin and prints
// one JSON value per document on stdout, the way Go reads it.
//
// It exists so that the plugin's Python tests can prove the plugin's YAML
// writer and reader against the real Go readers instead of an imitation:
//
//   - default (-lib=argocd): Argo CD's own splitter, the one the cmp-server
//     applies to a plugin's stdout (gitops-engine kube.SplitYAMLToString:
//     apimachinery's YAML-or-JSON decoder, each document converted by
//     sigs.k8s.io/yaml, whose YAMLToJSON types scalars like go-yaml v2; empty
//     and null documents are skipped). Each document is printed as the compact
//     JSON Argo CD passes on.
//   - -lib=yamlv2: plain gopkg.in/yaml.v2, yaml.Decoder into interface{}, one
//     value per document (null documents included), printed with every value
//     tagged with its Go type so that types compare exactly:
//     {"t":"null","v":null}, {"t":"bool","v":true}, {"t":"int","v":"-12"} (int, int64
//     and uint64 all as "int", decimal text), {"t":"float","v":"1.5"}
//     (strconv 'g' text: "+Inf", "-Inf", "NaN" included), {"t":"str","v":"x"},
//     {"t":"timestamp","v":"<RFC 3339>"}, {"t":"seq","v":[...]} and
//     {"t":"map","v":[[key,value],...]} with tagged keys (so 1 and "1" stay
//     distinct), entries sorted by their JSON text.
//
// The library versions are those Argo CD pins (see go.mod; -version prints the
// Argo CD version). A YAML error ends the program with exit status 1 and the
// error on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/utils/kube"
	yamlv2 "gopkg.in/yaml.v2"

	"avpplugin.local/toolchain/argocd/internal/buildinfo"
)

func main() {
	lib := flag.String("lib", "argocd", "argocd (Argo CD's splitter and sigs.k8s.io/yaml) or yamlv2 (gopkg.in/yaml.v2, tagged types)")
	version := flag.Bool("version", false, "print the Argo CD version whose YAML libraries are built in")
	flag.Parse()
	if *version {
		fmt.Println("goyaml-json (Argo CD " + buildinfo.ArgoCDVersion() + ")")
		return
	}
	input, err := io.ReadAll(os.Stdin)
	if err == nil {
		switch *lib {
		case "argocd":
			err = argocd(input, os.Stdout)
		case "yamlv2":
			err = yamlV2(input, os.Stdout)
		default:
			err = fmt.Errorf("unknown -lib %q (argocd or yamlv2)", *lib)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func argocd(input []byte, out io.Writer) error {
	docs, err := kube.SplitYAMLToString(input)
	if err != nil {
		return err
	}
	for _, doc := range docs {
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(doc)); err != nil {
			return err
		}
		compact.WriteByte('\n')
		if _, err := out.Write(compact.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func yamlV2(input []byte, out io.Writer) error {
	decoder := yamlv2.NewDecoder(bytes.NewReader(input))
	encoder := json.NewEncoder(out)
	encoder.SetEscapeHTML(false)
	for {
		var value any
		if err := decoder.Decode(&value); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		t, err := tag(value)
		if err != nil {
			return err
		}
		if err := encoder.Encode(t); err != nil {
			return err
		}
	}
}

type tagged struct {
	T string `json:"t"`
	V any    `json:"v"`
}

func tag(value any) (tagged, error) {
	switch v := value.(type) {
	case nil:
		return tagged{T: "null"}, nil
	case bool:
		return tagged{T: "bool", V: v}, nil
	case int:
		return tagged{T: "int", V: strconv.Itoa(v)}, nil
	case int64:
		return tagged{T: "int", V: strconv.FormatInt(v, 10)}, nil
	case uint64:
		return tagged{T: "int", V: strconv.FormatUint(v, 10)}, nil
	case float64:
		return tagged{T: "float", V: strconv.FormatFloat(v, 'g', -1, 64)}, nil
	case string:
		return tagged{T: "str", V: v}, nil
	case time.Time:
		return tagged{T: "timestamp", V: v.Format(time.RFC3339Nano)}, nil
	case []any:
		items := make([]tagged, 0, len(v))
		for _, item := range v {
			t, err := tag(item)
			if err != nil {
				return tagged{}, err
			}
			items = append(items, t)
		}
		return tagged{T: "seq", V: items}, nil
	case map[any]any:
		type entry struct {
			key  string
			pair [2]tagged
		}
		entries := make([]entry, 0, len(v))
		for key, item := range v {
			k, err := tag(key)
			if err != nil {
				return tagged{}, err
			}
			t, err := tag(item)
			if err != nil {
				return tagged{}, err
			}
			text, err := json.Marshal(k)
			if err != nil {
				return tagged{}, err
			}
			entries = append(entries, entry{string(text), [2]tagged{k, t}})
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].key < entries[j].key })
		pairs := make([][2]tagged, 0, len(entries))
		for _, e := range entries {
			pairs = append(pairs, e.pair)
		}
		return tagged{T: "map", V: pairs}, nil
	default:
		return tagged{}, fmt.Errorf("unexpected Go type %T from yaml.v2", value)
	}
}
