"""Forms validate every input at the edge; views stay thin."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from hoiweb.engine import ConfigError, validate_config_text
from hoiweb.models import REASON_TAGS, Config, Run, Video, validate_name_component


def normalise_newlines(text: str) -> str:
    """Browsers submit textareas with CRLF; configs are stored with LF so diffs and equality are meaningful."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") or not text else text + "\n"


def _name_validator(what: str):
    def check(value: str) -> None:
        try:
            validate_name_component(value, what)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    return check


class ConfigEditorMixin(forms.Form):
    """A config chosen from the saved ones, edited in the YAML editor, optionally saved as a new version."""

    base_config = forms.ModelChoiceField(queryset=Config.objects.all(), required=False, empty_label="default config")
    config_yaml = forms.CharField(widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "code"}))
    save_as = forms.CharField(required=False, max_length=128, help_text="save the edited config under this name")

    def clean_config_yaml(self) -> str:
        text = normalise_newlines(self.cleaned_data["config_yaml"])
        try:
            self.config_raw = validate_config_text(text)
        except ConfigError as exc:
            raise ValidationError(exc.errors) from exc
        return text

    def clean_save_as(self) -> str:
        name = self.cleaned_data.get("save_as", "").strip()
        if name:
            _name_validator("config name")(name)
        return name

    def resolve_config(self, user) -> Config | None:
        """The Config row the run points at: the saved version, the chosen one if unchanged, else None."""
        text = self.cleaned_data["config_yaml"]
        if self.cleaned_data.get("save_as"):
            return Config.create_version(self.cleaned_data["save_as"], text, user=user)
        base = self.cleaned_data.get("base_config")
        if base is not None and base.yaml_text == text:
            return base
        return None


class LaunchForm(ConfigEditorMixin):
    SOURCE_UPLOAD, SOURCE_EXISTING, SOURCE_BATCH = "upload", "existing", "batch"
    source = forms.ChoiceField(
        choices=[(SOURCE_UPLOAD, "Upload a new video"), (SOURCE_EXISTING, "An existing video"), (SOURCE_BATCH, "Batch: a dataset or category")],
        widget=forms.RadioSelect,
        initial=SOURCE_UPLOAD,
    )  # fmt: skip
    # upload
    dataset = forms.CharField(required=False, max_length=128)
    category = forms.CharField(required=False, max_length=128)
    name = forms.CharField(required=False, max_length=128, label="Video name")
    video = forms.FileField(required=False, help_text="MP4 (H.264)")
    mesh = forms.FileField(required=False, label="Object mesh", help_text=".obj in metres")
    object_mask = forms.FileField(required=False, label="First-frame object mask", help_text="PNG, video size")
    human_mask = forms.FileField(required=False, label="First-frame human mask", help_text="PNG, video size")
    depth = forms.FileField(required=False, label="First-frame depth", help_text="16-bit PNG, millimetres")
    cam_k = forms.FileField(
        required=False, label="cam_K.txt", help_text="optional 3x3 intrinsics (else from the render config)"
    )
    render_config = forms.FileField(
        required=False,
        label="Render config file",
        help_text="JSON or YAML (a pickle is read with a NumPy-only unpickler)",
    )
    render_config_text = forms.CharField(
        required=False, label="Render config (JSON/YAML)", widget=forms.Textarea(attrs={"rows": 6, "class": "code"})
    )
    character_data = forms.FileField(required=False, label="character_data.json", help_text="optional")
    # existing
    video_id = forms.CharField(required=False, max_length=400, label="Video id", help_text="dataset/category/name")
    # batch
    batch_dataset = forms.CharField(required=False, max_length=128, label="Dataset")
    batch_category = forms.CharField(required=False, max_length=128, label="Category (optional)")
    # stages
    first_stage = forms.TypedChoiceField(choices=[(n, n) for n in range(1, 7)], coerce=int, initial=1)
    last_stage = forms.TypedChoiceField(choices=[(n, n) for n in range(1, 7)], coerce=int, initial=6)

    def clean(self):
        data = super().clean()
        source = data.get("source")
        if source == self.SOURCE_UPLOAD:
            for key, what in (("dataset", "dataset"), ("category", "category"), ("name", "video name")):
                value = (data.get(key) or "").strip()
                if not value:
                    self.add_error(key, "required for an upload")
                    continue
                try:
                    validate_name_component(value, what)
                except ValueError as exc:
                    self.add_error(key, str(exc))
            if all(data.get(k) for k in ("dataset", "category", "name")):
                data["new_video_id"] = f"{data['dataset'].strip()}/{data['category'].strip()}/{data['name'].strip()}"
                if Video.objects.filter(video_id=data["new_video_id"]).exists():
                    self.add_error("name", f"video {data['new_video_id']} already exists: pick it as an existing video")
        elif source == self.SOURCE_EXISTING:
            video = Video.objects.filter(video_id=(data.get("video_id") or "").strip().strip("/")).first()
            if video is None:
                self.add_error("video_id", "no such video")
            data["videos"] = [video] if video else []
        elif source == self.SOURCE_BATCH:
            qs = Video.objects.filter(category__dataset__name=(data.get("batch_dataset") or "").strip())
            if data.get("batch_category"):
                qs = qs.filter(category__name=data["batch_category"].strip())
            data["videos"] = list(qs.select_related("category"))
            if not data["videos"]:
                self.add_error("batch_dataset", "no videos in that dataset/category")
        if data.get("first_stage") and data.get("last_stage") and data["first_stage"] > data["last_stage"]:
            self.add_error("last_stage", "must not be before the first stage")
        return data


class ReviewForm(forms.Form):
    verdict = forms.ChoiceField(choices=[(Run.ACCEPTED, "accept"), (Run.REJECTED, "reject")])
    reason_tags = forms.MultipleChoiceField(
        choices=[(t, t) for t in REASON_TAGS], required=False, widget=forms.CheckboxSelectMultiple
    )
    extra_tags = forms.CharField(required=False, max_length=300, help_text="comma-separated")
    note = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))

    def tags(self) -> list[str]:
        extra = [t.strip() for t in self.cleaned_data.get("extra_tags", "").split(",") if t.strip()]
        return list(self.cleaned_data.get("reason_tags") or []) + extra


class BulkReviewForm(ReviewForm):
    run_ids = forms.CharField(widget=forms.HiddenInput, required=False)
    select_all_matching = forms.BooleanField(required=False)

    def clean_run_ids(self) -> list[int]:
        raw = self.cleaned_data.get("run_ids", "")
        try:
            return [int(x) for x in raw.split(",") if x.strip()]
        except ValueError as exc:
            raise ValidationError("run ids must be integers") from exc


class ConfigForm(forms.Form):
    name = forms.CharField(max_length=128, validators=[_name_validator("config name")])
    yaml_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 30, "spellcheck": "false", "class": "code"}))
    note = forms.CharField(required=False, max_length=500)

    def clean_yaml_text(self) -> str:
        text = normalise_newlines(self.cleaned_data["yaml_text"])
        try:
            validate_config_text(text)
        except ConfigError as exc:
            raise ValidationError(exc.errors) from exc
        return text
