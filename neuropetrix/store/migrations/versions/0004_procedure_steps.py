"""procedure steps (MPPS); joins the jobs and accounts branches

Revision ID: 0004
Revises: 0002, 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = ('0002', '0003')
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('procedure_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('referenced', sa.JSON(), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('procedure_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_procedure_steps_study_uid'), ['study_uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('procedure_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_procedure_steps_study_uid'))
    op.drop_table('procedure_steps')
