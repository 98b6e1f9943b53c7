"""JSON columns for run parameters, metrics and parts; each run's image spec.

Text columns holding JSON (and a comma-separated parts list) become JSON columns, so values come
back typed instead of as strings every reader parses its own way. Each existing run gets the
image spec it was trained with, worked out from its parameters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The backbone registry's normalization modes as they were when this revision was written (a
# migration must not import the code it outlives).
_MODES = {"cnn": "unit", "vgg16": "caffe", "resnet50": "caffe", "densenet121": "torch", "densenet169": "torch",
          "mobilenetv2": "tf", "efficientnetb0": "none"}

_evaluations = sa.table("evaluations", sa.column("id", sa.Integer), sa.column("metrics", sa.Text))
_splits = sa.table("split_versions", sa.column("id", sa.Integer), sa.column("parameters", sa.Text))
_runs = sa.table("training_runs", sa.column("id", sa.Integer), sa.column("parts", sa.String),
                 sa.column("architecture", sa.String), sa.column("parameters", sa.Text),
                 sa.column("metrics", sa.Text), sa.column("image_spec", sa.Text))


def _clean(value):
    """NaN (which Python's json wrote for undefined metrics) is not JSON, and MySQL's JSON type refuses it."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _json(text):
    return None if text is None else json.dumps(_clean(json.loads(text)), sort_keys=True)


def _image_spec(architecture: str, parameters: dict) -> dict:
    return {"size": parameters["image_size"], "pad": bool(parameters.get("pad", False)),
            "canny": bool(parameters.get("canny", False)), "channels": 3,
            "normalization": _MODES.get(architecture, "unit")}


def upgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("image_spec", sa.Text, nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_runs.c.id, _runs.c.parts, _runs.c.architecture, _runs.c.parameters,
                                  _runs.c.metrics)).all()
    for run_id, parts, architecture, parameters, metrics in rows:
        spec = _image_spec(architecture, json.loads(parameters))
        conn.execute(_runs.update().where(_runs.c.id == run_id).values(
            parts=json.dumps([p for p in parts.split(",") if p]), image_spec=json.dumps(spec, sort_keys=True),
            parameters=_json(parameters), metrics=_json(metrics)))
    for evaluation_id, metrics in conn.execute(sa.select(_evaluations.c.id, _evaluations.c.metrics)).all():
        conn.execute(_evaluations.update().where(_evaluations.c.id == evaluation_id).values(metrics=_json(metrics)))
    for split_id, parameters in conn.execute(sa.select(_splits.c.id, _splits.c.parameters)).all():
        conn.execute(_splits.update().where(_splits.c.id == split_id).values(parameters=_json(parameters)))
    with op.batch_alter_table("training_runs") as batch:
        batch.alter_column("parts", existing_type=sa.String(255), type_=sa.JSON, existing_nullable=False,
                           comment="the body parts the model covers",
                           existing_comment="comma-separated body parts the model covers")
        batch.alter_column("parameters", existing_type=sa.Text, type_=sa.JSON, existing_nullable=False,
                           comment="every training option", existing_comment="JSON of every training option")
        batch.alter_column("metrics", existing_type=sa.Text, type_=sa.JSON, existing_nullable=True,
                           comment="the final validation metrics",
                           existing_comment="JSON of the final validation metrics")
        batch.alter_column("image_spec", existing_type=sa.Text, type_=sa.JSON, nullable=False,
                           comment="how images become model inputs: size, pad, canny, channels, normalization")
    with op.batch_alter_table("evaluations") as batch:
        batch.alter_column("metrics", existing_type=sa.Text, type_=sa.JSON, existing_nullable=False,
                           comment="image- and study-level metrics per part and overall",
                           existing_comment="JSON: image- and study-level metrics per part and overall")
    with op.batch_alter_table("split_versions") as batch:
        batch.alter_column("parameters", existing_type=sa.Text, type_=sa.JSON, existing_nullable=False,
                           comment="the options that made it", existing_comment="JSON of the options that made it")


def downgrade() -> None:
    with op.batch_alter_table("split_versions") as batch:
        batch.alter_column("parameters", existing_type=sa.JSON, type_=sa.Text, existing_nullable=False,
                           comment="JSON of the options that made it", existing_comment="the options that made it")
    with op.batch_alter_table("evaluations") as batch:
        batch.alter_column("metrics", existing_type=sa.JSON, type_=sa.Text, existing_nullable=False,
                           comment="JSON: image- and study-level metrics per part and overall",
                           existing_comment="image- and study-level metrics per part and overall")
    with op.batch_alter_table("training_runs") as batch:
        batch.alter_column("parts", existing_type=sa.JSON, type_=sa.String(255), existing_nullable=False,
                           comment="comma-separated body parts the model covers",
                           existing_comment="the body parts the model covers")
        batch.alter_column("parameters", existing_type=sa.JSON, type_=sa.Text, existing_nullable=False,
                           comment="JSON of every training option", existing_comment="every training option")
        batch.alter_column("metrics", existing_type=sa.JSON, type_=sa.Text, existing_nullable=True,
                           comment="JSON of the final validation metrics",
                           existing_comment="the final validation metrics")
    conn = op.get_bind()
    for run_id, parts in conn.execute(sa.select(_runs.c.id, _runs.c.parts)).all():
        conn.execute(_runs.update().where(_runs.c.id == run_id).values(parts=",".join(json.loads(parts))))
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("image_spec")
