package webhook

import (
	"encoding/json"
	"strings"
	"time"
)

// Event is something that happened, as its source reports it.
type Event struct {
	Type     string
	Operator string
	Time     time.Time
	// Repo is the repository as cove keeps it: "<project>/<name>" for a local project,
	// "<upstream>/<name there>" for a mirrored one (then Mirrored is true, and Name is the name the
	// client used). Empty for a quota event, which names Project only.
	Repo     string
	Name     string
	Mirrored bool
	Project  string
	Digest   string
	Tag      string
	// Details is a quota event's message; Retention a retention run's result.
	Details   string
	Retention *Retention
}

// Retention is what a retention run did, as Harbor's TAG_RETENTION payload has it.
type Retention struct {
	Total           int               `json:"total"`
	Retained        int               `json:"retained"`
	Hostname        string            `json:"hostname,omitempty"`
	ProjectName     string            `json:"project_name"`
	PolicyID        int64             `json:"retention_policy_id"`
	Result          string            `json:"result"`
	DeletedArtifact []DeletedArtifact `json:"deleted_artifact"`
}

// DeletedArtifact is one artifact a retention run deleted.
type DeletedArtifact struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	NameTag string `json:"name_tag"`
}

// payload is Harbor's Default payload.
type payload struct {
	Type      string     `json:"type"`
	OccurAt   int64      `json:"occur_at"`
	Operator  string     `json:"operator"`
	EventData *eventData `json:"event_data,omitempty"`
}

type eventData struct {
	Resources        []resource        `json:"resources,omitempty"`
	Repository       *repository       `json:"repository,omitempty"`
	Retention        *Retention        `json:"retention,omitempty"`
	CustomAttributes map[string]string `json:"custom_attributes,omitempty"`
}

type resource struct {
	Digest      string `json:"digest,omitempty"`
	Tag         string `json:"tag,omitempty"`
	ResourceURL string `json:"resource_url,omitempty"`
}

type repository struct {
	DateCreated  int64  `json:"date_created,omitempty"`
	Name         string `json:"name"`
	Namespace    string `json:"namespace"`
	RepoFullName string `json:"repo_full_name"`
	RepoType     string `json:"repo_type"`
}

// repoInfo is what the dispatcher knows of an event's repository when it writes the payload.
type repoInfo struct {
	public  bool
	created time.Time
}

// eventData is the event's event_data: what Default puts under it, and CloudEvents under data.
func (e Event) eventData(host string, ri repoInfo) *eventData {
	ed := &eventData{Retention: e.Retention}
	name := e.Repo
	if e.Mirrored {
		name = e.Name
	}
	if name != "" {
		ns, short := "", name
		if i := strings.LastIndexByte(name, '/'); i >= 0 {
			ns, short = name[:i], name[i+1:]
		}
		repoType := "private"
		if ri.public || e.Mirrored {
			repoType = "public"
		}
		r := &repository{Name: short, Namespace: ns, RepoFullName: name, RepoType: repoType}
		if !ri.created.IsZero() {
			r.DateCreated = ri.created.Unix()
		}
		ed.Repository = r
		if e.Digest != "" || e.Tag != "" {
			res := resource{Digest: e.Digest, Tag: e.Tag}
			// Harbor's resource_url: host/repo:tag, or @digest without a tag.
			if e.Tag != "" {
				res.ResourceURL = host + "/" + name + ":" + e.Tag
			} else {
				res.ResourceURL = host + "/" + name + "@" + e.Digest
			}
			if res.Tag == "" {
				res.Tag = e.Digest // Harbor: the first tag, else the digest
			}
			ed.Resources = []resource{res}
		}
	} else if e.Project != "" {
		repoType := "private"
		if ri.public {
			repoType = "public"
		}
		ed.Repository = &repository{Namespace: e.Project, RepoType: repoType}
	}
	if e.Details != "" {
		ed.CustomAttributes = map[string]string{"Details": e.Details}
	}
	return ed
}

// body is the request body of the event for format, and its Content-Type.
func (e Event) body(format, id, source, host string, ri repoInfo) ([]byte, string, error) {
	data := e.eventData(host, ri)
	if format == FormatCloudEvents {
		// CloudEvents 1.0, structured mode (JSON): the event's attributes, and Harbor's
		// event_data as data.
		ce := struct {
			SpecVersion     string     `json:"specversion"`
			ID              string     `json:"id"`
			Source          string     `json:"source"`
			Type            string     `json:"type"`
			Time            string     `json:"time"`
			DataContentType string     `json:"datacontenttype"`
			Operator        string     `json:"operator,omitempty"`
			Data            *eventData `json:"data"`
		}{"1.0", id, source, cloudEventType[e.Type], e.Time.UTC().Format(time.RFC3339Nano), "application/json", e.Operator, data}
		b, err := json.Marshal(ce)
		return b, "application/cloudevents+json", err
	}
	b, err := json.Marshal(payload{Type: e.Type, OccurAt: e.Time.Unix(), Operator: e.Operator, EventData: data})
	return b, "application/json", err
}

// cloudEventType names each event type as Harbor's CloudEvents payloads do.
var cloudEventType = map[string]string{
	PushArtifact:   "harbor.artifact.pushed",
	PullArtifact:   "harbor.artifact.pulled",
	DeleteArtifact: "harbor.artifact.deleted",
	QuotaExceed:    "harbor.quota.exceeded",
	QuotaWarning:   "harbor.quota.warned",
	TagRetention:   "harbor.tag_retention.finished",
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
