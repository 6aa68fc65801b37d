"""request log lines (ctx.log); an index on lane_requests.ended_at (admin charts)

Revision ID: 0003
Revises: 0004
Create Date: 2026-12-03 14:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('request_log_lines',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('request_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['lane_requests.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('request_log_lines', schema=None) as batch_op:
        batch_op.create_index('ix_request_log_lines_request_id_id', ['request_id', 'id'], unique=False)

    with op.batch_alter_table('lane_requests', schema=None) as batch_op:
        batch_op.create_index('ix_lane_requests_ended_at', ['ended_at'], unique=False)


def downgrade():
    with op.batch_alter_table('lane_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_lane_requests_ended_at')

    with op.batch_alter_table('request_log_lines', schema=None) as batch_op:
        batch_op.drop_index('ix_request_log_lines_request_id_id')

    op.drop_table('request_log_lines')
