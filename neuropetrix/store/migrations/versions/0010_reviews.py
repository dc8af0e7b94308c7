"""physician review: reviews, review_versions, the append-only review_actions; users' display name
and organisation (the SR's verifying observer)

Revision ID: 0010
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0004'
branch_labels = None
depends_on = None

_APPEND_ONLY = "review_actions is append-only: the audit cannot be changed"


def upgrade() -> None:
    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('candidates', sa.JSON(), nullable=False),
    sa.Column('candidates_version', sa.Integer(), nullable=False),
    sa.Column('decisions', sa.JSON(), nullable=False),
    sa.Column('impression', sa.Text(), nullable=False),
    sa.Column('pending_version', sa.Integer(), nullable=True),
    sa.Column('pending_job_id', sa.Integer(), nullable=True),
    sa.Column('route', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_uid')
    )
    op.create_table('review_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('analysis_job_id', sa.Integer(), nullable=True),
    sa.Column('signer_username', sa.String(length=64), nullable=False),
    sa.Column('signer_name', sa.String(length=128), nullable=False),
    sa.Column('signer_organisation', sa.String(length=128), nullable=False),
    sa.Column('decisions', sa.JSON(), nullable=False),
    sa.Column('impression', sa.Text(), nullable=False),
    sa.Column('sr_uid', sa.String(length=64), nullable=False),
    sa.Column('seg_uid', sa.String(length=64), nullable=False),
    sa.Column('control_id', sa.String(length=64), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_uid', 'version', name='uq_review_versions_study_version')
    )
    with op.batch_alter_table('review_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_versions_study_uid'), ['study_uid'], unique=False)
    op.create_table('review_actions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('review_actions', schema=None) as batch_op:
        batch_op.create_index('ix_review_actions_study', ['study_uid', 'id'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('display_name', sa.String(length=128), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('organisation', sa.String(length=128), nullable=False, server_default=''))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION review_actions_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$")
        op.execute("CREATE TRIGGER review_actions_append_only BEFORE UPDATE OR DELETE ON review_actions "
                   "FOR EACH ROW EXECUTE FUNCTION review_actions_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER review_actions_no_{verb.lower()} BEFORE {verb} ON review_actions "
                       f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER review_actions_append_only ON review_actions")
        op.execute("DROP FUNCTION review_actions_append_only()")
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('organisation')
        batch_op.drop_column('display_name')
    with op.batch_alter_table('review_actions', schema=None) as batch_op:
        batch_op.drop_index('ix_review_actions_study')
    op.drop_table('review_actions')
    with op.batch_alter_table('review_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_versions_study_uid'))
    op.drop_table('review_versions')
    op.drop_table('reviews')
