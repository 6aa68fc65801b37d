"""Console forms: the submit form built from a job type's payload schema, and the small fixed forms."""

from __future__ import annotations

import json

from flask_wtf import FlaskForm
from wtforms import BooleanField, FloatField, IntegerField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.form import BaseForm
from wtforms.validators import DataRequired, Length, ValidationError

from jobs.registry import JobType
from webapp import strict_json
from webapp.auth.accounts import MAX_TOKEN_NAME, token_name_problem

TEXTAREA_FROM = 200  # strings allowed to be longer than this get a textarea


class JsonField(TextAreaField):
    """A schema property of a type a plain input can't hold (object, array, untyped): typed as JSON."""

    def process_formdata(self, valuelist):
        if not valuelist:
            return
        if not valuelist[0].strip():
            self.data = None
            return
        try:
            self.data = strict_json.loads(valuelist[0])
        except json.JSONDecodeError:
            self.data = None
            raise ValueError("Enter valid JSON.") from None
        except (ValueError, RecursionError) as problem:
            self.data = None
            raise ValueError(f"Enter valid JSON: {problem}.") from None

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return "" if self.data is None else json.dumps(self.data)


class PayloadForm:
    """The submit form of one job type: one field per schema property, named ``payload-<property>``.

    Fields only convert what was typed to the schema's types; the lane service checks the schema
    itself, and its complaints are shown next to the fields with ``add_problems``.
    """

    def __init__(self, job_type: JobType, formdata=None, data: dict | None = None):
        self.job_type = job_type
        schema = job_type.schema
        required = set(schema.get("required", []))
        self.fields = BaseForm(
            [(name, field_for(name, prop, name in required)) for name, prop in schema.get("properties", {}).items()],
            prefix="payload-",
        )
        self.fields.process(formdata, data=data)  # data: an earlier payload, to run it again
        self.form_errors: list[str] = []

    def __iter__(self):
        return iter(self.fields)

    def payload(self) -> dict | None:
        """The typed values as a payload (empty fields left out), or None when some value has the wrong type."""
        payload = {}
        for field in self.fields:
            if isinstance(field, BooleanField):
                payload[field.short_name] = bool(field.data)
            elif not field.raw_data or field.raw_data[0] == "":
                continue  # left empty: the schema's default or its "required" applies
            elif field.process_errors:
                field.errors = list(field.process_errors)
            elif field.data is not None:
                payload[field.short_name] = field.data
        return None if self.has_errors else payload

    def add_problems(self, problems: dict[str, str]) -> None:
        """Show the service's problems (keyed by field path) next to their fields, the rest above the form."""
        for path, message in problems.items():
            name = path.split(".", 1)[0]
            if name in self.fields:
                field = self.fields[name]
                field.errors = [*field.errors, message]
            else:
                self.form_errors.append(f"{path}: {message}" if path else message)

    @property
    def has_errors(self) -> bool:
        return bool(self.form_errors) or any(field.errors for field in self.fields)


def field_for(name: str, prop: dict, required: bool):
    """The unbound WTForms field for one schema property."""
    label = prop.get("title") or name.replace("_", " ").capitalize()
    attrs: dict = {"required": True} if required and prop.get("type") != "boolean" else {}
    hints = [prop["description"]] if prop.get("description") else []
    default = prop.get("default")

    if "enum" in prop:
        choices = [SelectChoice(str(value)) for value in prop["enum"]]
        if not required:
            choices.insert(0, SelectChoice("", "(none)"))
        return SelectField(
            label, choices=choices, coerce=_enum_coercer(prop["enum"]), default=default,
            description=" ".join(hints), render_kw=attrs,
        )
    kind = prop.get("type")
    if kind in ("integer", "number"):
        if "minimum" in prop:
            attrs["min"] = prop["minimum"]
        if "maximum" in prop:
            attrs["max"] = prop["maximum"]
        hints.append(_range_hint(prop))
        field_class = IntegerField if kind == "integer" else FloatField
        attrs["step"] = 1 if kind == "integer" else "any"
        return field_class(label, default=default, description=" ".join(h for h in hints if h), render_kw=attrs)
    if kind == "boolean":
        return BooleanField(label, default=bool(default), description=" ".join(hints), render_kw=attrs)
    if kind == "string":
        max_length = prop.get("maxLength")
        if max_length is not None:
            attrs["maxlength"] = max_length
            hints.append(f"At most {max_length:,} characters.")
        field_class = TextAreaField if max_length is None or max_length > TEXTAREA_FROM else StringField
        return field_class(label, default=default, description=" ".join(hints), render_kw=attrs)
    hints.append("Enter JSON.")
    return JsonField(label, default=default, description=" ".join(hints), render_kw=attrs)


def _range_hint(prop: dict) -> str:
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        return f"From {low:,} to {high:,}."
    if low is not None:
        return f"At least {low:,}."
    if high is not None:
        return f"At most {high:,}."
    return ""


def _enum_coercer(values: list):
    """Map a submitted option back to the enum value it stands for (WTForms wants ValueError otherwise)."""
    by_text = {str(value): value for value in values}

    def coerce(text):
        if text is None or text == "":
            return None
        if not isinstance(text, str):  # a default, already a value
            return text
        if text not in by_text:
            raise ValueError("Not one of the choices.")
        return by_text[text]

    return coerce


def _token_name(_form, field) -> None:
    problem = token_name_problem(field.data)
    if problem:
        raise ValidationError(f"The name {problem}.")


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Give the token a name."), Length(max=MAX_TOKEN_NAME),
                                           _token_name])


class ConfirmForm(FlaskForm):
    """Only a CSRF token: for buttons that change something (cancel, revoke)."""
