"""Sign-in and sign-up forms (Flask-WTF: each carries its CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class RegisterForm(FlaskForm):
    # The name rules are checked (and worded) once, by accounts.create_user.
    username = StringField(
        "User name", validators=[DataRequired()],
        description="3 to 32 characters: lowercase letters a-z, digits, '_', '.' and '-'.",
    )
    password = PasswordField(
        "Password",
        # Length and commonness are checked (and worded) once, by accounts.validate_password.
        validators=[DataRequired(), Length(max=1024, message="Passwords may have at most 1024 characters.")],
        description="At least 12 characters, and not a common or easily guessed one.",
    )
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords differ.")])


class LogoutForm(FlaskForm):
    """Only a CSRF token: logging out is a POST that another site cannot forge."""
