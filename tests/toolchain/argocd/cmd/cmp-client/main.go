// Command cmp-client talks to an argocd-cmp-server over its unix socket the
// way Argo CD's repo-server does, and prints what Argo CD would get, as JSON.
//
// It exists so that the plugin's tests run the plugin through the real Argo CD
// code: wherever the repo-server's code is exported it is called, not copied.
//
//   - -op generate (default): reposerver/repository.GenerateManifests, the
//     repo-server's own manifest generation for one source. For a plugin source
//     it builds the environment (ARGOCD_APP_*, KUBE_VERSION,
//     KUBE_API_VERSIONS, ARGOCD_ENV_* with $VAR expansion, ARGOCD_APP_PARAMETERS
//     and PARAM_*), picks the sidecar (util/app/discovery: a named plugin, every
//     socket when the name is empty, CMP discovery before Helm/Kustomize when
//     the Application has no plugin block), streams the repository as tar+gzip
//     (util/cmp.SendRepoStream, with the repo-server's excludes), and splits the
//     answer with gitops-engine's kube.SplitYAML, flattening Lists. Errors go
//     through the repo-server's gRPC error sanitizer and are shown the way the
//     Application condition shows them.
//   - -op match: MatchRepository on the plugin's socket (CMP discovery).
//   - -op parameters: GetParametersAnnouncement, with the environment the
//     repo-server sends for it (ARGOCD_APP_NAME, ARGOCD_APP_SOURCE_*,
//     ARGOCD_ENV_*, parameters; no revision and no KUBE_*).
//   - -op check: CheckPluginConfiguration.
//
// Output (stdout, one JSON object): {"ok": true|false, ...}; for generate
// "manifests" (the objects as JSON), "source_type"; on failure "error" (the
// message the repo-server returns), "condition" (the Application's
// ComparisonError message), and "cmp_code"/"cmp_message" (the gRPC status the
// cmp-server returned, when the error came from it). Exit status: 0 ok, 1 not
// ok, 2 bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	grpc_retry "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	log "github.com/sirupsen/logrus"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"k8s.io/apimachinery/pkg/api/resource"
	k8sversion "k8s.io/apimachinery/pkg/util/version"

	pluginclient "github.com/argoproj/argo-cd/v3/cmpserver/apiclient"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/reposerver/apiclient"
	"github.com/argoproj/argo-cd/v3/reposerver/repository"
	"github.com/argoproj/argo-cd/v3/util/app/discovery"
	apppath "github.com/argoproj/argo-cd/v3/util/app/path"
	"github.com/argoproj/argo-cd/v3/util/cmp"
	grpcutil "github.com/argoproj/argo-cd/v3/util/grpc"
	utilio "github.com/argoproj/argo-cd/v3/util/io"

	"avpplugin.local/toolchain/argocd/internal/buildinfo"
)

// The repo-server's default --max-combined-directory-manifests-size.
const maxCombinedDirectoryManifestsSize = "10M"

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	op             string
	socketDir      string
	plugin         string
	noPluginBlock  bool
	repoRoot       string
	path           string
	env            multiFlag
	params         string
	appName        string
	appNamespace   string
	project        string
	revision       string
	repoURL        string
	targetRevision string
	kubeVersion    string
	apiVersions    string
	timeout        time.Duration
	tarExcludes    multiFlag
}

type result map[string]any

func main() {
	var o options
	var socket, logLevel string
	var version bool
	flag.StringVar(&o.op, "op", "generate", "generate, match, parameters or check")
	flag.StringVar(&socket, "socket", "", "the plugin's socket file: sets -socket-dir, and -plugin unless given")
	flag.StringVar(&o.socketDir, "socket-dir", "", "the shared socket directory (default $ARGOCD_PLUGINSOCKFILEPATH, else Argo CD's)")
	flag.StringVar(&o.plugin, "plugin", "", "spec.source.plugin.name (<name>-<version>); empty: every socket is asked (discovery)")
	flag.BoolVar(&o.noPluginBlock, "no-plugin-block", false, "the source has no plugin block: Argo CD's source type detection decides (generate only)")
	flag.StringVar(&o.repoRoot, "repo", ".", "repository root (what is streamed to the sidecar)")
	flag.StringVar(&o.path, "path", ".", "application path, relative to -repo (spec.source.path)")
	flag.Var(&o.env, "e", "NAME=VALUE of spec.source.plugin.env (the plugin sees ARGOCD_ENV_NAME); repeatable")
	flag.StringVar(&o.params, "params", "", "spec.source.plugin.parameters as JSON, e.g. [{\"name\":\"a\",\"string\":\"b\"}]")
	flag.StringVar(&o.appName, "app-name", "demo", "Application instance name (ARGOCD_APP_NAME)")
	flag.StringVar(&o.appNamespace, "app-namespace", "demo-ns", "destination namespace (ARGOCD_APP_NAMESPACE)")
	flag.StringVar(&o.project, "project", "default", "AppProject name (ARGOCD_APP_PROJECT_NAME)")
	flag.StringVar(&o.revision, "revision", "0123456789abcdef0123456789abcdef01234567", "resolved commit (ARGOCD_APP_REVISION)")
	flag.StringVar(&o.repoURL, "repo-url", "https://git.example.com/team/apps.git", "spec.source.repoURL")
	flag.StringVar(&o.targetRevision, "target-revision", "HEAD", "spec.source.targetRevision")
	flag.StringVar(&o.kubeVersion, "kube-version", "1.29.0", "destination cluster version (KUBE_VERSION, normalised like Argo CD)")
	flag.StringVar(&o.apiVersions, "api-versions", "v1,apps/v1,apps/v1/Deployment,batch/v1,networking.k8s.io/v1,apiextensions.k8s.io/v1", "comma-separated cluster API versions (KUBE_API_VERSIONS)")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "request deadline (Argo CD's default repo-server timeout is 60s); 0: none")
	flag.Var(&o.tarExcludes, "tar-exclude", "glob left out of the tarball (--plugin-tar-exclude); repeatable")
	flag.StringVar(&logLevel, "loglevel", "warn", "log level of the Argo CD code (stderr)")
	flag.BoolVar(&version, "version", false, "print the Argo CD version this client was built from")
	flag.Parse()
	if version {
		fmt.Println("cmp-client (Argo CD " + buildinfo.ArgoCDVersion() + ")")
		return
	}
	if flag.NArg() != 0 {
		usage("unexpected arguments: %s", strings.Join(flag.Args(), " "))
	}
	level, err := log.ParseLevel(logLevel)
	if err != nil {
		usage("%v", err)
	}
	log.SetLevel(level)
	log.SetOutput(os.Stderr)

	pluginSet := false
	flag.Visit(func(f *flag.Flag) { pluginSet = pluginSet || f.Name == "plugin" })
	if socket != "" {
		o.socketDir = filepath.Dir(socket)
		if !pluginSet {
			o.plugin = strings.TrimSuffix(filepath.Base(socket), ".sock")
		}
	}
	if o.socketDir != "" {
		abs, err := filepath.Abs(o.socketDir)
		if err != nil {
			usage("%v", err)
		}
		// Read by util/app/discovery (common.GetPluginSockFilePath), as in the repo-server.
		if err := os.Setenv(common.EnvPluginSockFilePath, abs); err != nil {
			usage("%v", err)
		}
	}
	if o.repoRoot, err = filepath.Abs(o.repoRoot); err != nil {
		usage("%v", err)
	}

	ctx := context.Background()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	started := time.Now()
	var res result
	switch o.op {
	case "generate":
		res = generate(ctx, o)
	case "match":
		res = match(ctx, o)
	case "parameters":
		res = parameters(ctx, o)
	case "check":
		res = check(ctx, o)
	default:
		usage("unknown -op %q (generate, match, parameters or check)", o.op)
	}
	res["seconds"] = time.Since(started).Seconds()
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if ok, _ := res["ok"].(bool); !ok {
		os.Exit(1)
	}
}

func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cmp-client: "+format+"\n", args...)
	os.Exit(2)
}

// pluginBlock is spec.source.plugin: name, env and parameters.
func pluginBlock(o options) (*v1alpha1.ApplicationSourcePlugin, error) {
	plugin := &v1alpha1.ApplicationSourcePlugin{Name: o.plugin}
	for _, text := range o.env {
		entry, err := v1alpha1.NewEnvEntry(text)
		if err != nil {
			return nil, err
		}
		plugin.Env = append(plugin.Env, entry)
	}
	if o.params != "" {
		if err := json.Unmarshal([]byte(o.params), &plugin.Parameters); err != nil {
			return nil, fmt.Errorf("-params: %w", err)
		}
	}
	return plugin, nil
}

func failure(err error) result {
	res := result{"ok": false, "error": err.Error()}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		res["cmp_code"] = se.GRPCStatus().Code().String()
		res["cmp_message"] = se.GRPCStatus().Message()
	}
	return res
}

func generate(ctx context.Context, o options) result {
	plugin, err := pluginBlock(o)
	if err != nil {
		usage("%v", err)
	}
	source := &v1alpha1.ApplicationSource{RepoURL: o.repoURL, Path: o.path, TargetRevision: o.targetRevision}
	if !o.noPluginBlock {
		source.Plugin = plugin
	}
	var apiVersions []string
	if o.apiVersions != "" {
		apiVersions = strings.Split(o.apiVersions, ",")
	}
	q := &apiclient.ManifestRequest{
		Repo:              &v1alpha1.Repository{Repo: o.repoURL},
		Revision:          o.revision,
		AppName:           o.appName,
		Namespace:         o.appNamespace,
		ProjectName:       o.project,
		ApplicationSource: source,
		KubeVersion:       o.kubeVersion,
		ApiVersions:       apiVersions,
	}

	// The repo-server's GenerateManifest RPC: its error sanitizer wraps the handler, and the
	// repository checkout path is replaced in messages (here: the parent of -repo plays the
	// repo-server's checkout root).
	var response *apiclient.ManifestResponse
	var inner error
	handler := func(ctx context.Context, _ any) (any, error) {
		if sanitizer, ok := grpcutil.SanitizerFromContext(ctx); ok {
			root := filepath.Dir(o.repoRoot)
			sanitizer.AddRegexReplacement(regexp.MustCompile(regexp.QuoteMeta(root)+`/[^ /]*`), "<path to cached source>")
		}
		appPath, err := apppath.Path(o.repoRoot, o.path)
		if err != nil {
			inner = err
			return nil, err
		}
		response, inner = repository.GenerateManifests(ctx, appPath, o.repoRoot, o.revision, q, false, nil,
			resource.MustParse(maxCombinedDirectoryManifestsSize), utilio.NewRandomizedTempPaths(os.TempDir()),
			repository.WithCMPTarExcludedGlobs(o.tarExcludes))
		return response, inner
	}
	_, err = grpcutil.ErrorSanitizerUnaryServerInterceptor()(ctx, q, nil, handler)
	if err != nil {
		// What the gRPC server makes of the handler's error, then the controller's wording.
		st, ok := status.FromError(err)
		if !ok {
			st = status.FromContextError(err)
		}
		res := failure(inner)
		res["error"] = st.Message()
		res["code"] = st.Code().String()
		res["condition"] = "Failed to load target state: failed to generate manifest for source 1 of 1: " + st.Err().Error()
		res["manifests"] = []json.RawMessage{}
		return res
	}
	manifests := make([]json.RawMessage, 0, len(response.Manifests))
	for _, text := range response.Manifests {
		manifests = append(manifests, json.RawMessage(text))
	}
	return result{"ok": true, "manifests": manifests, "source_type": response.SourceType}
}

// sidecar connects to the plugin's socket like util/app/discovery does.
func sidecar(o options) (utilio.Closer, pluginclient.ConfigManagementPluginServiceClient, error) {
	if o.plugin == "" {
		return nil, nil, errors.New("-plugin (or -socket) is required for this operation")
	}
	address := filepath.Join(common.GetPluginSockFilePath(), o.plugin+".sock")
	return pluginclient.NewConfigManagementPluginClientSet(address).NewConfigManagementPluginClient()
}

// pluginParamEnvs mirrors the repo-server's plugin environment: ARGOCD_ENV_* values
// expanded against envVars, then ARGOCD_APP_PARAMETERS and PARAM_*.
func pluginParamEnvs(envVars []string, plugin *v1alpha1.ApplicationSourcePlugin) ([]string, error) {
	env := envVars
	parsed := make(v1alpha1.Env, len(env))
	for i, text := range env {
		entry, err := v1alpha1.NewEnvEntry(text)
		if err != nil {
			return nil, errors.New("failed to parse env vars")
		}
		parsed[i] = entry
	}
	for _, entry := range plugin.Env {
		env = append(env, fmt.Sprintf("ARGOCD_ENV_%s=%s", entry.Name, parsed.Envsubst(entry.Value)))
	}
	paramEnv, err := plugin.Parameters.Environ()
	if err != nil {
		return nil, fmt.Errorf("failed to generate env vars from parameters: %w", err)
	}
	return append(env, paramEnv...), nil
}

// generateEnv is the environment the repo-server sends with GenerateManifest (and with the
// MatchRepository call made while generating).
func generateEnv(o options, plugin *v1alpha1.ApplicationSourcePlugin) ([]string, error) {
	short := func(n int) string {
		if len(o.revision) > n {
			return o.revision[:n]
		}
		return o.revision
	}
	build := v1alpha1.Env{
		{Name: "ARGOCD_APP_NAME", Value: o.appName},
		{Name: "ARGOCD_APP_NAMESPACE", Value: o.appNamespace},
		{Name: "ARGOCD_APP_PROJECT_NAME", Value: o.project},
		{Name: "ARGOCD_APP_REVISION", Value: o.revision},
		{Name: "ARGOCD_APP_REVISION_SHORT", Value: short(7)},
		{Name: "ARGOCD_APP_REVISION_SHORT_8", Value: short(8)},
		{Name: "ARGOCD_APP_SOURCE_REPO_URL", Value: o.repoURL},
		{Name: "ARGOCD_APP_SOURCE_PATH", Value: o.path},
		{Name: "ARGOCD_APP_SOURCE_TARGET_REVISION", Value: o.targetRevision},
	}
	kubeVersion := ""
	if o.kubeVersion != "" {
		parsed, err := k8sversion.ParseGeneric(o.kubeVersion)
		if err != nil {
			return nil, fmt.Errorf("could not parse kubernetes version %s: %w", o.kubeVersion, err)
		}
		kubeVersion = parsed.String()
	}
	env := append(build.Environ(), "KUBE_VERSION="+kubeVersion, "KUBE_API_VERSIONS="+o.apiVersions)
	return pluginParamEnvs(env, plugin)
}

func match(ctx context.Context, o options) result {
	plugin, err := pluginBlock(o)
	if err != nil {
		usage("%v", err)
	}
	env, err := generateEnv(o, plugin)
	if err != nil {
		return failure(err)
	}
	appPath, err := apppath.Path(o.repoRoot, o.path)
	if err != nil {
		return failure(err)
	}
	conn, client, err := sidecar(o)
	if err != nil {
		return failure(err)
	}
	defer utilio.Close(conn)
	stream, err := client.MatchRepository(ctx, grpc_retry.Disable())
	if err != nil {
		return failure(fmt.Errorf("error getting stream client: %w", err))
	}
	if err := cmp.SendRepoStream(ctx, appPath, o.repoRoot, stream, env, o.tarExcludes); err != nil {
		return failure(fmt.Errorf("error sending stream: %w", err))
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return failure(fmt.Errorf("error receiving stream response: %w", err))
	}
	return result{"ok": true, "is_supported": resp.GetIsSupported(), "is_discovery_enabled": resp.GetIsDiscoveryEnabled()}
}

func parameters(ctx context.Context, o options) result {
	plugin, err := pluginBlock(o)
	if err != nil {
		usage("%v", err)
	}
	// What the repo-server sends when the UI asks for the app details of a plugin source.
	env, err := pluginParamEnvs([]string{
		"ARGOCD_APP_NAME=" + o.appName,
		"ARGOCD_APP_SOURCE_REPO_URL=" + o.repoURL,
		"ARGOCD_APP_SOURCE_PATH=" + o.path,
		"ARGOCD_APP_SOURCE_TARGET_REVISION=" + o.targetRevision,
	}, plugin)
	if err != nil {
		return failure(err)
	}
	appPath, err := apppath.Path(o.repoRoot, o.path)
	if err != nil {
		return failure(err)
	}
	conn, client, err := discovery.DetectConfigManagementPlugin(ctx, appPath, o.repoRoot, o.plugin, env, o.tarExcludes)
	if err != nil {
		return failure(fmt.Errorf("failed to detect CMP for app: %w", err))
	}
	defer utilio.Close(conn)
	stream, err := client.GetParametersAnnouncement(ctx, grpc_retry.Disable())
	if err != nil {
		return failure(fmt.Errorf("error getting parametersAnnouncementStream: %w", err))
	}
	if err := cmp.SendRepoStream(ctx, appPath, o.repoRoot, stream, env, o.tarExcludes); err != nil {
		return failure(fmt.Errorf("error sending file to cmp-server: %w", err))
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return failure(fmt.Errorf("failed to get parameter announcement: %w", err))
	}
	announcements := resp.GetParameterAnnouncements()
	if announcements == nil {
		announcements = []*apiclient.ParameterAnnouncement{}
	}
	return result{"ok": true, "announcements": announcements}
}

func check(ctx context.Context, o options) result {
	conn, client, err := sidecar(o)
	if err != nil {
		return failure(err)
	}
	defer utilio.Close(conn)
	resp, err := client.CheckPluginConfiguration(ctx, &emptypb.Empty{})
	if err != nil {
		return failure(fmt.Errorf("error checking plugin configuration: %w", err))
	}
	return result{"ok": true, "is_discovery_configured": resp.GetIsDiscoveryConfigured(), "provide_git_creds": resp.GetProvideGitCreds()}
}
